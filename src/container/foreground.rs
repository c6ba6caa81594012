//! Supervising a container process from the foreground (`run`, `exec`): signals lrun receives
//! are forwarded to it, a terminal is proxied, and its exit status becomes lrun's.

use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Context, Result};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::start::HooksCwd;
use super::{CreateOptions, Runtime};
use crate::notify::Relay;
use crate::sync::Message;
use crate::terminal::{self, RawMode};

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

/// Block the forwarded signals and SIGCHLD. Called before the container process exists so a
/// signal arriving meanwhile is neither lost nor fatal; children unblock before exec.
pub fn block_signals() -> Result<SigSet> {
    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(s);
    }
    mask.add(Signal::SIGCHLD);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None).context("block signals")?;
    Ok(mask)
}

/// `run`: create and start. Detached, return once started (deleting the container if start
/// fails). In the foreground, forward signals and wait, delete the container unless `keep`,
/// and return the exit code.
pub fn run(rt: &Runtime, opts: &CreateOptions, detach: bool, keep: bool) -> Result<i32> {
    if detach {
        let opts = CreateOptions {
            foreground: false,
            ..opts.clone()
        };
        super::create(rt, &opts)?;
        if let Err(e) = super::start::start_from(rt, opts.id, HooksCwd::Bundle) {
            let _ = super::delete::delete_from(rt, opts.id, true, HooksCwd::Bundle);
            return Err(e);
        }
        return Ok(0);
    }
    let opts = CreateOptions {
        foreground: true,
        ..opts.clone()
    };
    let mask = block_signals()?;
    let created = super::create(rt, &opts)?;
    let pid = Pid::from_raw(created.state.pid);
    let started = created
        .channel
        .as_ref()
        .context("foreground run without a channel")
        .and_then(|c| {
            c.send(&Message::Start)?;
            c.wait_closed()
        });
    let result = match started {
        Ok(()) => {
            crate::logging::debug(&format!("run {}: the init executed the program", opts.id));
            super::start::run_poststart(&created.state, HooksCwd::Bundle);
            let code = supervise(pid, &mask, created.pty, created.relay.as_ref());
            if let Ok(c) = &code {
                crate::logging::debug(&format!("run {}: the container exited with {c}", opts.id));
            }
            code
        }
        // A step after start failed (execve, a startContainer hook): the init reported it and
        // exits 255, which `run` returns as the container's status, as runc's does.
        Err(e) => {
            crate::logging::error(&e);
            Ok(255)
        }
    };
    if result.is_err() || !keep {
        let deleted = super::delete::delete_from(rt, opts.id, true, HooksCwd::Bundle);
        let code = result?;
        deleted?;
        return Ok(code);
    }
    result
}

/// Wait for `pid` to exit, forwarding signals and proxying the pty; returns its exit code.
pub fn supervise(
    pid: Pid,
    mask: &SigSet,
    pty: Option<OwnedFd>,
    relay: Option<&Relay>,
) -> Result<i32> {
    let sfd = SignalFd::with_flags(mask, SfdFlags::SFD_CLOEXEC).context("signalfd")?;
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let _raw = match &pty {
        Some(_) => RawMode::enter(stdin.as_fd())?,
        None => None,
    };
    if let Some(m) = &pty {
        terminal::copy_window_size(stdin.as_fd(), m.as_fd());
    }
    let mut stdin_open = pty.is_some();
    let mut master_open = pty.is_some();
    loop {
        if let Some(code) = reap(pid)? {
            if let Some(m) = &pty {
                drain(m, &stdout);
            }
            return Ok(code);
        }
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if let Some(r) = relay {
            fds.push(PollFd::new(r.fd(), PollFlags::POLLIN));
        }
        if let Some(m) = &pty {
            if master_open {
                fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
            }
            if stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context("poll"),
        }
        let ready: Vec<bool> = fds.iter().map(|f| f.any().unwrap_or(false)).collect();
        drop(fds);
        if ready[0]
            && let Some(info) = sfd.read_signal().context("read signalfd")?
        {
            let sig = info.ssi_signo as i32;
            match (Signal::try_from(sig), &pty) {
                (Ok(Signal::SIGCHLD), _) => {}
                // The kernel signals the pty's foreground group itself on a size change.
                (Ok(Signal::SIGWINCH), Some(m)) => {
                    terminal::copy_window_size(stdin.as_fd(), m.as_fd())
                }
                (Ok(s), _) => {
                    let _ = kill(pid, s);
                }
                _ => {}
            }
        }
        let mut i = 1;
        if let Some(r) = relay {
            // lrun stays the main process systemd watches: no MAINPID of the container's.
            if ready[i]
                && let Err(e) = r.forward_one(None)
            {
                crate::logging::warn(&format!("{e:#}"));
            }
            i += 1;
        }
        if let Some(m) = &pty {
            if master_open {
                if ready[i] && !terminal::pump(m.as_fd(), stdout.as_fd()) {
                    master_open = false;
                }
                i += 1;
            }
            if stdin_open
                && ready.get(i).copied().unwrap_or(false)
                && !terminal::pump(stdin.as_fd(), m.as_fd())
            {
                stdin_open = false;
            }
        }
    }
}

/// Copy what the container wrote before it exited.
fn drain(master: &OwnedFd, stdout: &std::io::Stdout) {
    loop {
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0) {
            return;
        }
        if !terminal::pump(master.as_fd(), stdout.as_fd()) {
            return;
        }
    }
}

/// Reap every exited child; return the watched process's exit code once it has exited.
fn reap(watched: Pid) -> Result<Option<i32>> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, code)) if p == watched => return Ok(Some(code)),
            Ok(WaitStatus::Signaled(p, sig, _)) if p == watched => {
                return Ok(Some(128 + sig as i32));
            }
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::ECHILD) => return Ok(Some(255)),
            Err(e) => return Err(e).context("waitpid"),
        }
    }
}
