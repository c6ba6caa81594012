//! `events`: statistics every interval and OOM events as they happen, until the container
//! stops. The caller prints each event.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::Runtime;
use crate::cgroups;
use crate::cgroups::oom::Wake;
pub use crate::cgroups::stats::Event;
use crate::state::Status;

/// With `stats_only`, one statistics event and return; else until the container stops.
pub fn events(
    rt: &Runtime,
    id: &str,
    stats_only: bool,
    interval: Duration,
    emit: &mut dyn FnMut(&Event) -> Result<()>,
) -> Result<()> {
    if interval.is_zero() {
        bail!("--interval must be greater than 0");
    }
    let (dir, st) = rt.states().load(id)?;
    if st.status(&dir, cgroups::is_frozen) == Status::Stopped {
        bail!("container {id:?} is not running");
    }
    let cgroup = cgroups::open_driver(&st.cgroups)?;
    let print_stats = |emit: &mut dyn FnMut(&Event) -> Result<()>| -> Result<()> {
        let stats = cgroup
            .stats()
            .with_context(|| format!("statistics of container {id:?}"))?;
        emit(&Event {
            kind: "stats",
            id,
            data: Some(&stats),
        })
    };
    if stats_only {
        return print_stats(emit);
    }
    let mut watcher = cgroup.oom_watcher()?;
    loop {
        if st.status(&dir, cgroups::is_frozen) == Status::Stopped {
            return Ok(());
        }
        print_stats(emit)?;
        let deadline = Instant::now() + interval;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let Some(w) = watcher.as_mut() else {
                std::thread::sleep(left);
                break;
            };
            match w.wait(left)? {
                Wake::Timeout => {}
                Wake::Oom(_) => emit(&Event {
                    kind: "oom",
                    id,
                    data: None,
                })?,
                Wake::Gone => return Ok(()),
            }
        }
    }
}
