//! `ps`: the processes of a container, from its cgroups.

use anyhow::{Context, Result};

use super::Runtime;

pub fn ps(rt: &Runtime, id: &str) -> Result<Vec<i32>> {
    let (_, st) = rt.states().load(id)?;
    st.cgroups
        .pids()
        .with_context(|| format!("list processes of container {id:?}"))
}
