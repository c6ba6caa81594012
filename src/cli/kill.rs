use super::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_g: &Globals, _a: Args) -> anyhow::Result<i32> {
    anyhow::bail!("kill: not implemented")
}
