//! `lrun exec ID`.

use super::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

pub fn run(_g: &Globals, _a: Args) -> anyhow::Result<i32> {
    anyhow::bail!("exec is not supported yet")
}
