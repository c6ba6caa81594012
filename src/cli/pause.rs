//! `lrun pause ID` and `lrun resume ID`.

use super::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub id: String,
}

pub fn pause(_g: &Globals, _a: Args) -> anyhow::Result<i32> {
    anyhow::bail!("pause is not supported yet")
}

pub fn resume(_g: &Globals, _a: Args) -> anyhow::Result<i32> {
    anyhow::bail!("resume is not supported yet")
}
