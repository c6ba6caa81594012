//! `lrun run ID`: create and start; in the foreground, forward signals, wait, delete, and exit
//! with the container's exit code (128+N when killed by signal N).

use super::Globals;
use super::create;
use crate::container;
use crate::foreground;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub create: create::Args,
    /// Return once the container has started instead of waiting for it.
    #[arg(short, long)]
    pub detach: bool,
    /// Keep the container's state after it exits (foreground only).
    #[arg(long)]
    pub keep: bool,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    create::pull_first(g, &a.create)?;
    let rt = g.runtime();
    if a.detach {
        container::create(&rt, &a.create.options(false))?;
        if let Err(e) = container::start(&rt, &a.create.id) {
            let _ = container::delete(&rt, &a.create.id, true);
            return Err(e);
        }
        return Ok(0);
    }
    foreground::run(&rt, &a.create.options(true), a.keep)
}
