//! `lrun run` in the foreground: the container's init is lrun's child. Signals lrun receives
//! are forwarded to it, its exit status becomes lrun's, and the container is deleted after.

use anyhow::{Context, Result};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::container::{self, CreateOptions, Runtime};
use crate::sync::Message;

const FORWARDED: [Signal; 8] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
];

pub fn run(rt: &Runtime, opts: &CreateOptions, keep: bool) -> Result<i32> {
    // Blocked before the container exists, so a signal arriving during create is not lost
    // (and does not kill lrun half-way); the init unblocks everything before exec.
    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(s);
    }
    mask.add(Signal::SIGCHLD);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None).context("block signals")?;

    let created = container::create(rt, opts)?;
    let pid = Pid::from_raw(created.state.pid);
    let code = match wait(&created, pid, &mask) {
        Ok(code) => code,
        Err(e) => {
            let _ = container::delete(rt, opts.id, true);
            return Err(e);
        }
    };
    if !keep {
        container::delete(rt, opts.id, true)?;
    }
    Ok(code)
}

fn wait(created: &container::Created, pid: Pid, mask: &SigSet) -> Result<i32> {
    let chan = created
        .channel
        .as_ref()
        .context("foreground run without a channel")?;
    chan.send(&Message::Start)?;
    container::run_poststart(&created.state);
    let sfd = SignalFd::with_flags(mask, SfdFlags::SFD_CLOEXEC).context("signalfd")?;
    loop {
        if let Some(code) = reap(pid)? {
            return Ok(code);
        }
        let Some(info) = sfd.read_signal().context("read signalfd")? else {
            continue;
        };
        let sig = info.ssi_signo as i32;
        if sig == Signal::SIGCHLD as i32 {
            continue;
        }
        if let Ok(s) = Signal::try_from(sig) {
            let _ = kill(pid, s);
        }
    }
}

/// Reap every exited child; return the init's exit code once it has exited.
fn reap(init: Pid) -> Result<Option<i32>> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, code)) if p == init => return Ok(Some(code)),
            Ok(WaitStatus::Signaled(p, sig, _)) if p == init => return Ok(Some(128 + sig as i32)),
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::ECHILD) => return Ok(Some(255)),
            Err(e) => return Err(e).context("waitpid"),
        }
    }
}
