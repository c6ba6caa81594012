//! `lrun create ID --bundle DIR`.

use super::{CreateArgs, Globals};

pub fn run(g: &Globals, a: CreateArgs) -> anyhow::Result<i32> {
    crate::container::create(&g.runtime(), &a.options(false))?;
    Ok(0)
}
