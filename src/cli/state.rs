//! `lrun state ID`: the OCI state as JSON.

use super::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub id: String,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    let (st, status) = crate::container::state(&g.runtime(), &a.id)?;
    println!("{}", serde_json::to_string_pretty(&st.oci(status))?);
    Ok(0)
}
