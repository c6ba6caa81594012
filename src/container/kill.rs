//! `kill`: signal the init (pid-reuse safe, through a pidfd), or with --all every process of
//! the container's cgroups.

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::LinuxNamespaceType;

use super::Runtime;
use crate::cgroups;
use crate::state::{Status, process_alive};

/// Parse a signal as runc does: a number, or a name with or without SIG. `None` is signal 0,
/// which sends nothing and tests that the container's init is alive (kill(2)'s null signal).
pub fn parse_signal(s: &str) -> Result<Option<Signal>> {
    if let Ok(n) = s.parse::<i32>() {
        if n == 0 {
            return Ok(None);
        }
        return Signal::try_from(n)
            .map(Some)
            .with_context(|| format!("unknown signal {s:?}"));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<Signal>()
        .map(Some)
        .map_err(|_| anyhow::anyhow!("unknown signal {s:?}"))
}

/// What engines rely on (runtime-spec/engines.md): a stopped container's plain kill fails
/// with runc's "container not running" (containerd, docker and CRI-O take those words for
/// "already gone"); `kill --all` of it signals what is left in its cgroup and succeeds
/// silently (containerd's shim sends it after every exit, podman after every stop).
/// `sig` `None` is signal 0: it succeeds for a live container and fails like any plain
/// kill for a stopped one, sending nothing.
pub fn kill(rt: &Runtime, id: &str, sig: Option<Signal>, all: bool) -> Result<()> {
    let (dir, st) = rt.states().load(id)?;
    let status = st.status(&dir, cgroups::is_frozen);
    let mut live = matches!(status, Status::Created | Status::Running | Status::Paused);
    // The init first, checked against pid reuse; with --all, then everything else in the
    // container's cgroups (which may exit meanwhile, and whose loss is no error).
    if live {
        match signal_process(st.pid, st.pid_start_time, sig) {
            Ok(()) => crate::logging::debug(&format!(
                "kill {id}: {} sent to the init, pid {}",
                sig.map_or("no signal (liveness test)".to_string(), |s| s.to_string()),
                st.pid
            )),
            // It exited since `status` looked: now it is a stopped container.
            Err(KillError::Gone) => live = false,
            Err(KillError::Other(e)) => return Err(e),
        }
    }
    if live {
        if let (true, Some(sig)) = (all, sig) {
            signal_cgroup(&st, sig, st.pid)?;
        }
        return Ok(());
    }
    // Stopped. The spec asks for an error; runc's `--all` is its own extension, and so is a
    // SIGKILL for what is left of a container sharing a pid namespace (its processes outlive
    // the init; in a private one the kernel killed them with it).
    if all {
        // Whatever is left, if the cgroup is still there (it goes at delete).
        if let Some(sig) = sig {
            let _ = signal_cgroup(&st, sig, 0);
        }
        return Ok(());
    }
    if sig == Some(Signal::SIGKILL) && !private_pid_namespace(rt, id) {
        return signal_cgroup(&st, Signal::SIGKILL, 0)
            .context("unable to kill all processes: container not running");
    }
    bail!("cannot kill container {id:?}: container not running")
}

/// Signal every process in the container's cgroups but `skip` (and lrun itself, should a
/// cgroupsPath have named a cgroup it runs in).
fn signal_cgroup(st: &crate::state::ContainerState, sig: Signal, skip: i32) -> Result<()> {
    let pids = cgroups::open_driver(&st.cgroups)?.pids()?;
    let me = std::process::id() as i32;
    for pid in pids.into_iter().filter(|p| *p != skip && *p != me) {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
    }
    Ok(())
}

/// Whether the container's config gives it a pid namespace of its own (runc's `IsPrivate`:
/// listed, and without a path to join). An unreadable config counts as private: then a
/// stopped container's kill fails as the spec asks.
fn private_pid_namespace(rt: &Runtime, id: &str) -> bool {
    let Ok(spec) = super::container_spec(rt, id) else {
        return true;
    };
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n.typ() == LinuxNamespaceType::Pid && n.path().is_none())
        })
}

/// Why a signal was not sent.
pub(super) enum KillError {
    /// The process exited (or its pid now belongs to another process).
    Gone,
    Other(anyhow::Error),
}

impl From<KillError> for anyhow::Error {
    fn from(e: KillError) -> Self {
        match e {
            // Go's words, which containerd and CRI-O take for "already exited".
            KillError::Gone => {
                anyhow::anyhow!("unable to signal init: os: process already finished")
            }
            KillError::Other(e) => e,
        }
    }
}

/// Signal a process through a pidfd, after checking it is still the one we started: a pid
/// reused by an unrelated process must never be signalled. `None` (signal 0) only checks.
pub(super) fn signal_process(
    pid: i32,
    start_time: u64,
    sig: Option<Signal>,
) -> std::result::Result<(), KillError> {
    use rustix::process::{PidfdFlags, pidfd_open, pidfd_send_signal};
    let raw_pid = rustix::process::Pid::from_raw(pid).ok_or(KillError::Gone)?;
    let fd = pidfd_open(raw_pid, PidfdFlags::empty()).map_err(|_| KillError::Gone)?;
    if !process_alive(pid, start_time) {
        return Err(KillError::Gone);
    }
    let Some(sig) = sig else {
        return Ok(());
    };
    // nix's signals are the named ones, which rustix knows too.
    let rsig = rustix::process::Signal::from_named_raw(sig as i32)
        .ok_or_else(|| KillError::Other(anyhow::anyhow!("send {sig} to {pid}: unknown signal")))?;
    match pidfd_send_signal(&fd, rsig) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::SRCH) => Err(KillError::Gone),
        Err(e) => Err(KillError::Other(
            anyhow::Error::from(std::io::Error::from(e)).context(format!("send {sig} to {pid}")),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_like_runc() {
        assert_eq!(parse_signal("9").unwrap(), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("term").unwrap(), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("SIGHUP").unwrap(), Some(Signal::SIGHUP));
        assert_eq!(parse_signal("0").unwrap(), None);
        assert!(parse_signal("SIGNOPE").is_err());
        assert!(parse_signal("999").is_err());
    }
}
