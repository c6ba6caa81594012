//! `lrun delete ID [--force]`.

use super::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Kill a running container first; also cleans up after a crashed create.
    #[arg(short, long)]
    pub force: bool,
    pub id: String,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    crate::container::delete(&g.runtime(), &a.id, a.force)?;
    Ok(0)
}
