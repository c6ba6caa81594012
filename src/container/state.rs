//! `state` and `list`: containers as the OCI state describes them.

use anyhow::Result;

use super::Runtime;
use crate::cgroups;
use crate::state::{ContainerState, Status};

/// One container's state record and its status now.
pub fn state(rt: &Runtime, id: &str) -> Result<(ContainerState, Status)> {
    let (dir, st) = rt.states().load(id)?;
    let status = st.status(&dir, cgroups::is_frozen);
    Ok((st, status))
}

/// Every container that has a state record, with its status now.
pub fn list(rt: &Runtime) -> Result<Vec<(ContainerState, Status)>> {
    let states = rt.states();
    let mut rows = Vec::new();
    for id in states.list()? {
        // A container being created (or whose creator died) has no state yet: skip it.
        let Ok((dir, st)) = states.load(&id) else {
            continue;
        };
        let status = st.status(&dir, cgroups::is_frozen);
        rows.push((st, status));
    }
    Ok(rows)
}
