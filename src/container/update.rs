//! `update`: new resource limits for a created, running or paused container.

use anyhow::{Context, Result, bail};
use oci_spec::runtime::LinuxResources;

use super::Runtime;
use super::pause::load_locked;
use crate::state::Status;

pub fn update(rt: &Runtime, id: &str, resources: &LinuxResources) -> Result<()> {
    let (_lock, dir, st) = load_locked(rt, id)?;
    let status = st.status(&dir);
    if !matches!(status, Status::Created | Status::Running | Status::Paused) {
        bail!("container {id:?} is {status}: cannot update");
    }
    st.cgroups
        .update(resources)
        .with_context(|| format!("update container {id:?}"))
}
