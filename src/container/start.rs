//! `start`: release the init from the exec fifo, learn whether it reached execve, then run
//! poststart hooks.

use std::os::fd::OwnedFd;

use anyhow::{Context, Result, bail};
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;

use super::Runtime;
use crate::cgroups;
use crate::hooks;
use crate::logging;
use crate::notify;
use crate::state::{self, ContainerState, FIFO_FILE, Status, process_alive};
use crate::sync::{self, FifoOutcome};
use crate::utils;

/// `start`: release the init from the exec fifo, then run poststart hooks.
pub fn start(rt: &Runtime, id: &str) -> Result<()> {
    start_from(rt, id, HooksCwd::Caller)
}

/// Where poststart and poststop hooks run: runc runs them in its own cwd, which `runc run`
/// has changed to the bundle and `runc start` or `runc delete` has not.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum HooksCwd {
    Caller,
    Bundle,
}

pub(super) fn start_from(rt: &Runtime, id: &str, cwd: HooksCwd) -> Result<()> {
    let (dir, st) = rt.states().load(id)?;
    let _lock = state::lock(&dir)?;
    match st.status(&dir, cgroups::is_frozen) {
        Status::Created => {}
        s => bail!("cannot start container {id:?}: it is {s}, not created"),
    }
    // Bound before the process starts, so not a word it says is lost.
    let relay = match &st.notify_socket {
        Some(host) => Some(notify::Relay::bind(&dir.join("notify"), host.clone())?),
        None => None,
    };
    let fifo_path = dir.join(FIFO_FILE);
    // The init holds the fifo open and has filled it; reading lets its last write through.
    let fifo = open(
        &fifo_path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("open {}", fifo_path.display()))?;
    wait_readable(&fifo, st.pid, st.pid_start_time)?;
    let mut byte = [0u8; 1];
    let _ = nix::unistd::read(&fifo, &mut byte);
    utils::remove_file_if_exists(&fifo_path)?;
    logging::debug(&format!("start {id}: released the init (pid {})", st.pid));
    let failed = match sync::fifo_outcome(&read_until_eof(&fifo)?) {
        FifoOutcome::Exec => None,
        FifoOutcome::Error(e) => Some(anyhow::anyhow!("{e}")),
        FifoOutcome::Died => Some(anyhow::anyhow!(
            "the container process exited before it could execute its program"
        )),
    };
    if let Some(e) = failed {
        // The init exits 255 after reporting; make sure it is gone, so the container is
        // stopped when we return (no poststart hooks: nothing started).
        ensure_stopped(st.pid, st.pid_start_time);
        return Err(e);
    }
    logging::debug(&format!("start {id}: the init executed the program"));
    run_poststart(&st, cwd);
    if let Some(relay) = relay {
        relay_until_ready(&relay, st.pid, st.pid_start_time)?;
    }
    Ok(())
}

/// As runc: `start` of a notify service returns once it said READY=1 (or exited), having
/// relayed everything up to that with MAINPID set to the container's init.
fn relay_until_ready(relay: &notify::Relay, pid: i32, start_time: u64) -> Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    loop {
        let mut fds = [PollFd::new(relay.fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(n) if n > 0 => {
                if relay.forward_one(Some(pid))? {
                    return Ok(());
                }
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {
                if !process_alive(pid, start_time) {
                    return Ok(());
                }
            }
            Err(e) => return Err(e).context("poll the notify socket"),
        }
    }
}

pub(super) fn run_poststart(st: &ContainerState, cwd: HooksCwd) {
    if let Some(h) = &st.hooks {
        let json = serde_json::to_vec(&st.oci(Status::Running)).unwrap_or_default();
        // runtime-spec 1.2: each failing poststart hook is logged, the others still run and the
        // container keeps running (1.3 makes it an error that stops the container, as runc).
        let cwd = (cwd == HooksCwd::Bundle).then_some(st.bundle.as_path());
        for e in hooks::run_each("poststart", h.poststart().as_ref(), &json, cwd) {
            logging::warn(&format!("{e:#}"));
        }
    }
}

/// The init keeps the fifo open (close-on-exec) until it execs: draining what it wrote lets
/// its blocked write through; what it writes then says whether it reached execve (see
/// `sync::FIFO_EXEC`), and EOF comes when it has exec'd or exited.
fn read_until_eof(fifo: &OwnedFd) -> Result<Vec<u8>> {
    let flags =
        nix::fcntl::fcntl(fifo, nix::fcntl::FcntlArg::F_GETFL).context("fcntl exec fifo")?;
    let blocking = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fifo, nix::fcntl::FcntlArg::F_SETFL(blocking)).context("fcntl exec fifo")?;
    let mut buf = [0u8; 4096];
    // Only what follows the fill matters: keep the last page's worth and anything after.
    let mut tail = Vec::new();
    loop {
        match nix::unistd::read(fifo, &mut buf) {
            Ok(0) => return Ok(tail),
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if let Some(i) = tail.iter().position(|&b| b != sync::FIFO_FILL) {
                    tail.drain(..i);
                } else {
                    tail.clear();
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("read exec fifo"),
        }
    }
}

/// Wait (briefly) for an init that failed after `start` to exit, then kill what is left.
fn ensure_stopped(pid: i32, start_time: u64) {
    for _ in 0..2000 {
        if !process_alive(pid, start_time) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let _ = super::kill::signal_process(pid, start_time, Some(nix::sys::signal::Signal::SIGKILL));
}

fn wait_readable(fifo: &OwnedFd, pid: i32, start_time: u64) -> Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    loop {
        let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(n) if n > 0 => return Ok(()),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context("poll exec fifo"),
        }
        if !process_alive(pid, start_time) {
            bail!("the container process exited before start");
        }
    }
}
