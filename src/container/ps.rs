//! `ps`: the processes of a container, from its cgroups.

use anyhow::{Context, Result};

use super::Runtime;
use crate::cgroups;

pub fn ps(rt: &Runtime, id: &str) -> Result<Vec<i32>> {
    let (_, st) = rt.states().load(id)?;
    cgroups::open_driver(&st.cgroups)
        .and_then(|d| d.pids())
        .with_context(|| format!("list processes of container {id:?}"))
}
