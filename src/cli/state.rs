//! `lrun state ID`: the OCI state as JSON.

use super::Globals;
use crate::cgroups;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub id: String,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    let (dir, st) = g.runtime().states().load(&a.id)?;
    let status = st.status(&dir, cgroups::is_frozen);
    println!("{}", serde_json::to_string_pretty(&st.oci(status))?);
    Ok(0)
}
