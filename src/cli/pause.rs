//! `lrun pause ID` and `lrun resume ID`.

use anyhow::{Context, bail};

use super::Globals;
use crate::state::{self, ContainerState, DirLock, StateRoot, Status};

#[derive(clap::Args, Debug)]
pub struct Args {
    pub id: String,
}

pub fn pause(g: &Globals, a: Args) -> anyhow::Result<i32> {
    let (_lock, dir, st) = load_locked(g, &a.id)?;
    let status = st.status(&dir);
    if status != Status::Running {
        bail!(
            "container {:?} is {status}, not running: cannot pause",
            a.id
        );
    }
    st.cgroups
        .freeze()
        .with_context(|| format!("pause container {:?}", a.id))?;
    Ok(0)
}

pub fn resume(g: &Globals, a: Args) -> anyhow::Result<i32> {
    let (_lock, dir, st) = load_locked(g, &a.id)?;
    let status = st.status(&dir);
    if status != Status::Paused {
        bail!(
            "container {:?} is {status}, not paused: cannot resume",
            a.id
        );
    }
    st.cgroups
        .thaw()
        .with_context(|| format!("resume container {:?}", a.id))?;
    Ok(0)
}

/// Load a container's state under its lock, so a concurrent delete cannot pull the cgroups
/// away between the status check and the change.
pub(super) fn load_locked(
    g: &Globals,
    id: &str,
) -> anyhow::Result<(DirLock, std::path::PathBuf, ContainerState)> {
    let root = StateRoot::new(&g.root);
    // The first load gives the friendly "does not exist" errors; the second is under lock.
    let (dir, _) = root.load(id)?;
    let lock = state::lock(&dir)?;
    let (dir, st) = root.load(id)?;
    Ok((lock, dir, st))
}
