//! `lrun pause ID` and `lrun resume ID`.

use super::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub id: String,
}

pub fn pause(g: &Globals, a: Args) -> anyhow::Result<i32> {
    crate::container::pause(&g.runtime(), &a.id)?;
    Ok(0)
}

pub fn resume(g: &Globals, a: Args) -> anyhow::Result<i32> {
    crate::container::resume(&g.runtime(), &a.id)?;
    Ok(0)
}
