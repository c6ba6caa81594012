//! `lrun kill ID [SIGNAL]`.

use super::Globals;
use crate::container;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Send the signal to every process of the container, not just its init.
    #[arg(short, long)]
    pub all: bool,
    pub id: String,
    /// Signal name (TERM, SIGTERM) or number.
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    let sig = container::parse_signal(&a.signal)?;
    container::kill(&g.runtime(), &a.id, sig, a.all)?;
    Ok(0)
}
