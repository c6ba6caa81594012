//! `kill`: signal the init (pid-reuse safe, through a pidfd), or with --all every process of
//! the container's cgroups.

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::Runtime;
use crate::cgroups;
use crate::state::{Status, process_alive};

/// Parse a signal as runc does: a number, or a name with or without SIG.
pub fn parse_signal(s: &str) -> Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).with_context(|| format!("unknown signal {s:?}"));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<Signal>()
        .map_err(|_| anyhow::anyhow!("unknown signal {s:?}"))
}

pub fn kill(rt: &Runtime, id: &str, sig: Signal, all: bool) -> Result<()> {
    let (dir, st) = rt.states().load(id)?;
    let status = st.status(&dir, cgroups::is_frozen);
    if !matches!(status, Status::Created | Status::Running | Status::Paused) {
        bail!("cannot kill container {id:?}: it is {status}");
    }
    // The init first, checked against pid reuse; with --all, then everything else in the
    // container's cgroups (which may exit meanwhile, and whose loss is no error).
    signal_process(st.pid, st.pid_start_time, sig)?;
    if all {
        let pids = cgroups::open_driver(&st.cgroups)?.pids()?;
        for pid in pids.into_iter().filter(|p| *p != st.pid) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
        }
    }
    Ok(())
}

/// Signal a process through a pidfd, after checking it is still the one we started: a pid
/// reused by an unrelated process must never be signalled.
pub(super) fn signal_process(pid: i32, start_time: u64, sig: Signal) -> Result<()> {
    use rustix::process::{PidfdFlags, pidfd_open, pidfd_send_signal};
    let gone = || anyhow::anyhow!("the container process {pid} is gone");
    let raw_pid = rustix::process::Pid::from_raw(pid).ok_or_else(gone)?;
    let fd = pidfd_open(raw_pid, PidfdFlags::empty()).map_err(|_| gone())?;
    if !process_alive(pid, start_time) {
        return Err(gone());
    }
    // nix's signals are the named ones, which rustix knows too.
    let rsig = rustix::process::Signal::from_named_raw(sig as i32)
        .with_context(|| format!("send {sig} to {pid}: unknown signal"))?;
    pidfd_send_signal(&fd, rsig)
        .map_err(std::io::Error::from)
        .with_context(|| format!("send {sig} to {pid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_like_runc() {
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("term").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("SIGHUP").unwrap(), Signal::SIGHUP);
        assert!(parse_signal("SIGNOPE").is_err());
        assert!(parse_signal("999").is_err());
    }
}
