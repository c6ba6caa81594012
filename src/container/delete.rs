//! `delete` and `gc`: release everything a container holds (also after a crashed create).

use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;

use super::Runtime;
use super::kill::signal_process;
use super::start::HooksCwd;
use crate::cgroups;
use crate::hooks;
use crate::layers;
use crate::logging;
use crate::state::{self, Status, process_alive};

/// `delete`: stop what is left, release cgroups and layers, run poststop hooks, remove state.
pub fn delete(rt: &Runtime, id: &str, force: bool) -> Result<()> {
    delete_from(rt, id, force, HooksCwd::Caller)
}

pub(super) fn delete_from(rt: &Runtime, id: &str, force: bool, cwd: HooksCwd) -> Result<()> {
    let states = rt.states();
    let dir = states.container_dir(id)?;
    // runc: deleting an unknown container with --force is not an error.
    if force && !dir.exists() {
        return Ok(());
    }
    if !dir.is_dir() {
        // runc's words: containerd's shim takes "does not exist" from a plain delete as done.
        bail!("{id:?}: container does not exist");
    }
    let lock = state::lock(&dir)?;
    let st = match states.load(id) {
        Ok((_, st)) => Some(st),
        // No state.json: create died before recording anything else.
        Err(_) if !dir.join(state::STATE_FILE).exists() => None,
        Err(e) if force => {
            logging::warn(&format!("{e:#}"));
            None
        }
        Err(e) => return Err(e),
    };
    if let Some(st) = &st {
        let status = st.status(&dir, cgroups::is_frozen);
        let stoppable = matches!(status, Status::Stopped | Status::Created);
        if !force && !stoppable {
            bail!(
                "cannot delete container {id:?} that is not stopped: {status} (stop it first or use --force)"
            );
        }
        logging::debug(&format!("delete {id}: {status}, init pid {}", st.pid));
        if status != Status::Stopped {
            let _ = signal_process(st.pid, st.pid_start_time, Some(Signal::SIGKILL));
        }
        cgroups::open_driver(&st.cgroups)?.destroy()?;
        logging::debug(&format!("delete {id}: cgroups destroyed"));
        wait_gone(st.pid, st.pid_start_time);
        if st.layered {
            layers::release_root(&rt.layers(), &dir, st.layers.as_ref())?;
            logging::debug(&format!("delete {id}: layered root released"));
        }
    } else {
        // Whatever a crashed create may have taken in the layers; release is idempotent.
        layers::release_root(&rt.layers(), &dir, None)?;
    }
    fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    logging::debug(&format!("delete {id}: removed {}", dir.display()));
    drop(lock);
    if let Some(st) = &st
        && let Some(h) = &st.hooks
    {
        let json = serde_json::to_vec(&st.oci(Status::Stopped)).unwrap_or_default();
        // The spec: each poststop failure is logged; the other hooks run and delete goes on.
        let cwd = (cwd == HooksCwd::Bundle).then_some(st.bundle.as_path());
        for e in hooks::run_each("poststop", h.poststop().as_ref(), &json, cwd) {
            logging::warn(&format!("{e:#}"));
        }
    }
    Ok(())
}

fn wait_gone(pid: i32, start_time: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut nap = Duration::from_micros(100);
    while process_alive(pid, start_time) && Instant::now() < deadline {
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(10));
    }
}

/// What `gc` did: the ids it removed, and each container it could not judge or delete, with
/// why (one failing container must not keep gc from the others).
#[derive(Default)]
pub struct GcOutcome {
    pub removed: Vec<String>,
    pub failed: Vec<(String, anyhow::Error)>,
    /// systemd scopes of this root that no container owned any more, stopped.
    pub scopes: Vec<String>,
}

/// `gc`: recover after crashes. A container whose `create` died half-way (never marked
/// created, and no process holds its lock) is deleted; with `stopped`, stopped containers
/// too.
/// With `drop_idle`, every layer mount nobody uses goes too, however recently it was used.
pub fn gc(rt: &Runtime, stopped: bool, drop_idle: bool) -> Result<GcOutcome> {
    let states = rt.states();
    let mut outcome = GcOutcome::default();
    for id in states.list()? {
        match gc_one(rt, &id, stopped) {
            Ok(true) => outcome.removed.push(id),
            Ok(false) => {}
            Err(e) => outcome.failed.push((id, e)),
        }
    }
    // Shared layer mounts whose last user died without releasing them.
    layers::gc_mounts(&rt.layers(), drop_idle)?;
    // Scopes no container owns: its state is gone (removed by hand, or a scope left by a
    // delete that failed half-way), or its id now names a container in another scope.
    let owned = |id: &str, unit: &str| match states.load(id) {
        Ok((_, st)) => st.cgroups.unit.as_deref() == Some(unit),
        // Being created (no state.json yet), or unreadable: leave it to delete.
        Err(_) => states.container_dir(id).is_ok_and(|d| d.exists()),
    };
    match cgroups::systemd::orphan_scopes(&rt.root, owned) {
        Ok(units) => outcome.scopes = units,
        Err(e) => outcome.failed.push(("systemd scopes".into(), e)),
    }
    Ok(outcome)
}

/// Delete one container if it is stale; returns whether it was.
fn gc_one(rt: &Runtime, id: &str, stopped: bool) -> Result<bool> {
    let states = rt.states();
    let dir = states.container_dir(id)?;
    let Some(lock) = state::try_lock(&dir)? else {
        return Ok(false);
    };
    let stale = match states.load(id) {
        Ok((_, st)) => {
            !st.created_ok || (stopped && st.status(&dir, cgroups::is_frozen) == Status::Stopped)
        }
        // No state.json and nobody creating: the creator died before writing it.
        Err(_) => !dir.join(state::STATE_FILE).exists(),
    };
    drop(lock);
    if stale {
        delete(rt, id, true)?;
    }
    Ok(stale)
}
