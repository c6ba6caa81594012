//! `update`: new resource limits for a created, running or paused container.

use anyhow::{Context, Result, bail};
use oci_spec::runtime::LinuxResources;

use super::Runtime;
use super::pause::load_locked;
use crate::cgroups;
use crate::state::Status;

pub fn update(rt: &Runtime, id: &str, resources: &LinuxResources) -> Result<()> {
    let (_lock, dir, st) = load_locked(rt, id)?;
    let status = st.status(&dir, cgroups::is_frozen);
    if !matches!(status, Status::Created | Status::Running | Status::Paused) {
        bail!("container {id:?} is {status}: cannot update");
    }
    cgroups::open_driver(&st.cgroups)
        .and_then(|d| d.update(resources))
        .with_context(|| format!("update container {id:?}"))
}
