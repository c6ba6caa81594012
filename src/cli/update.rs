//! `lrun update ID` and `lrun events ID`.

use super::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub id: String,
}

#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    pub id: String,
    #[arg(long)]
    pub stats: bool,
    #[arg(long, default_value = "5s")]
    pub interval: String,
}

pub fn run(_g: &Globals, _a: Args) -> anyhow::Result<i32> {
    anyhow::bail!("update is not supported yet")
}

pub fn events(_g: &Globals, _a: EventsArgs) -> anyhow::Result<i32> {
    anyhow::bail!("events is not supported yet")
}
