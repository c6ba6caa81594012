//! `lrun start ID`.

use super::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub id: String,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    crate::container::start(&g.runtime(), &a.id)?;
    Ok(0)
}
