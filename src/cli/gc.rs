//! `lrun gc`: clean up after crashed creates (and, with --stopped, stopped containers).

use super::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Also delete containers whose process has exited.
    #[arg(long)]
    pub stopped: bool,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    for id in crate::container::gc(&g.runtime(), a.stopped)? {
        println!("removed {id}");
    }
    Ok(0)
}
