//! `lrun layer ...`: pack, inspect, verify, add, ls, rm, gc. STUB: filled in by the layers work.

use clap::Subcommand;

use super::Globals;

#[derive(Subcommand, Debug)]
pub enum LayerCommand {}

pub fn run(_g: &Globals, c: LayerCommand) -> anyhow::Result<i32> {
    match c {}
}
