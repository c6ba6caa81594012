//! `lrun ps ID`.

use super::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(short, long, default_value = "table")]
    pub format: String,
    pub id: String,
    /// Options passed to ps(1) (table format only).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

pub fn run(_g: &Globals, _a: Args) -> anyhow::Result<i32> {
    anyhow::bail!("ps is not supported yet")
}
