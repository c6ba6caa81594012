//! `lrun run ID`: create and start; in the foreground, forward signals, wait, delete, and exit
//! with the container's exit code (128+N when killed by signal N).

use super::{CreateArgs, Globals};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub create: CreateArgs,
    /// Return once the container has started instead of waiting for it.
    #[arg(short, long)]
    pub detach: bool,
    /// Keep the container's state after it exits (foreground only).
    #[arg(long)]
    pub keep: bool,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    let opts = a.create.options(!a.detach);
    crate::container::run(&g.runtime(), &opts, a.detach, a.keep)
}
