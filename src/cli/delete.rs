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
    let rt = g.runtime();
    // runc: deleting an unknown container with --force is not an error.
    if a.force && !rt.states().container_dir(&a.id)?.exists() {
        return Ok(0);
    }
    crate::container::delete(&rt, &a.id, a.force)?;
    Ok(0)
}
