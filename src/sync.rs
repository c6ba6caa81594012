//! The channel between `lrun create` (the parent) and the container's init during set-up.
//!
//! A SOCK_SEQPACKET socketpair keeps message boundaries, and a peer that dies shows up as EOF,
//! so neither side can hang on the other's crash.
//!
//! Who sends which message in which order, for create (direct and through an intermediate),
//! a foreground run and exec: the sequence tables in runtime-spec/design.md ("Parent/child
//! protocol"). Keep them in step with the `Message` variants below.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{Context, Result, bail};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use serde::{Deserialize, Serialize};

use crate::utils::{Forked, SingleThreaded, clone_fork};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub enum Message {
    /// Child: namespaces that the parent must finish (uid/gid maps, cgroup) exist now.
    NeedParentSetup,
    /// Parent: maps written, cgroups joined; carry on.
    ParentSetupDone,
    /// Child: the container's init, when it is not the first child (pid or time namespace).
    InitPid(i32),
    /// Init: mounts are ready, run the prestart and createRuntime hooks now.
    RunRuntimeHooks,
    /// Parent: those hooks succeeded; carries the init's host pid for the hooks' state.
    RuntimeHooksDone(i32),
    /// Init: the pty master of a terminal container (sent with the fd).
    Pty,
    /// Init: set-up is complete; it waits for Created.
    Ready,
    /// Parent: the container is recorded as created; from now on the init outlives `create`.
    Created,
    /// Parent (`run`): start now (instead of the exec fifo).
    Start,
    /// Either side: set-up failed, with the reason.
    Error(String),
}

pub struct Channel {
    fd: OwnedFd,
}

const MAX_MESSAGE: usize = 64 * 1024;

pub fn pair() -> Result<(Channel, Channel)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .context("socketpair")?;
    Ok((Channel { fd: a }, Channel { fd: b }))
}

impl Channel {
    pub fn send(&self, msg: &Message) -> Result<()> {
        self.send_with_fd(msg, None)
    }

    /// Send a message, optionally with a file descriptor (SCM_RIGHTS).
    pub fn send_with_fd(&self, msg: &Message, fd: Option<RawFd>) -> Result<()> {
        let data = serde_json::to_vec(msg).context("encode sync message")?;
        let iov = [IoSlice::new(&data)];
        let fds = fd.map(|f| [f]);
        let cmsgs: Vec<ControlMessage> = fds.iter().map(|f| ControlMessage::ScmRights(f)).collect();
        sendmsg::<()>(
            self.fd.as_raw_fd(),
            &iov,
            &cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .context("send on sync socket")?;
        Ok(())
    }

    pub fn recv(&self) -> Result<Message> {
        Ok(self.recv_with_fd()?.0)
    }

    /// Receive the next message; EOF means the peer died.
    pub fn recv_with_fd(&self) -> Result<(Message, Option<OwnedFd>)> {
        match self.recv_or_eof()? {
            Some(m) => Ok(m),
            None => bail!("the other side of the sync socket exited"),
        }
    }

    /// Receive the next message, or `None` at EOF: for callers to whom EOF is the expected
    /// end, so that it costs no error value (with RUST_BACKTRACE set, each one captures a
    /// backtrace).
    fn recv_or_eof(&self) -> Result<Option<(Message, Option<OwnedFd>)>> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut cmsg_space = nix::cmsg_space!([RawFd; 1]);
        let mut reset_seen = false;
        let (n, fd) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg_space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(r) => {
                    let mut fd = None;
                    for c in r.cmsgs().context("read control message")? {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            // SAFETY: the kernel just gave us this fd; we own it now.
                            fd = fds.first().map(|&f| unsafe { OwnedFd::from_raw_fd(f) });
                        }
                    }
                    break (r.bytes, fd);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                // A peer that exits with messages of ours unread makes the kernel report
                // ECONNRESET once, ahead of what the peer sent before exiting (its error):
                // read on, EOF follows the last message.
                Err(nix::errno::Errno::ECONNRESET) if !reset_seen => {
                    reset_seen = true;
                    continue;
                }
                Err(e) => return Err(e).context("receive on sync socket"),
            }
        };
        if n == 0 {
            return Ok(None);
        }
        let msg = serde_json::from_slice(&buf[..n]).context("decode sync message")?;
        Ok(Some((msg, fd)))
    }

    /// Wait for one specific message; an Error message becomes an error.
    pub fn expect(&self, want: Message) -> Result<()> {
        match self.recv()? {
            m if m == want => Ok(()),
            Message::Error(e) => bail!("{e}"),
            m => bail!("sync protocol: expected {want:?}, got {m:?}"),
        }
    }

    /// Wait until the peer closes its end (it exec'd or exited); an Error message on the way
    /// becomes an error.
    pub fn wait_closed(&self) -> Result<()> {
        loop {
            match self.recv_or_eof() {
                Ok(Some((Message::Error(e), _))) => bail!("{e}"),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return Ok(()),
            }
        }
    }

    /// Whether the other end is closed (its process died), without waiting.
    pub fn peer_gone(&self) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        // A closed peer of a seqpacket socket shows as POLLHUP, which poll always reports.
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::empty())];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
            && fds[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLHUP))
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Die with the parent (`lrun create` or `lrun exec`), the process at the other end of
/// `chan`. Set after clone or fork, when the parent may already be gone (and then no signal
/// comes): its end of the channel is closed then, and we leave at once.
pub fn die_with_parent(chan: &Channel) {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    if chan.peer_gone() {
        // SAFETY: nobody to report to; leave without running destructors.
        unsafe { libc::_exit(1) }
    }
}

/// Fork the process that becomes the container's, with CLONE_PARENT so that lrun (the
/// caller's parent) can wait for it; the caller reports its pid on `chan` and exits. Returns
/// only in the new process, and only after the report is sent, so the parent always reads the
/// pid before anything the new process says.
pub fn fork_reported(one_thread: &SingleThreaded, chan: &Channel) -> Result<()> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    let forked = clone_fork(one_thread, nix::sched::CloneFlags::CLONE_PARENT)?;
    if let Forked::Parent(pid) = forked {
        drop(r);
        let sent = chan.send(&Message::InitPid(pid));
        drop(w);
        // SAFETY: the intermediate process is done either way.
        unsafe { libc::_exit(if sent.is_ok() { 0 } else { 1 }) }
    }
    drop(w);
    let mut byte = [0u8; 1];
    // EOF once the intermediate has sent the pid and exited.
    while let Err(nix::errno::Errno::EINTR) = nix::unistd::read(&r, &mut byte) {}
    Ok(())
}

/// The exec fifo between the init and `lrun start` (runtime-spec/design.md, steps 8 and 9). The
/// init fills it with `FIFO_FILL` and blocks until `start` reads; then it writes `FIFO_EXEC`
/// just before execve, or `FIFO_ERROR` and its error text when a step after `start` fails.
/// `start` reads until EOF (the init's fd is close-on-exec and it is the only writer).
pub const FIFO_FILL: u8 = b'0';
pub const FIFO_EXEC: u8 = b'1';
pub const FIFO_ERROR: u8 = b'2';

/// What `start` read from the exec fifo, up to EOF.
#[derive(Debug, PartialEq)]
pub enum FifoOutcome {
    /// The init reached execve and the fd closed: the program runs (or ran).
    Exec,
    /// A step after `start` failed: the init's error text.
    Error(String),
    /// EOF without a word: the init died (a signal) before execve.
    Died,
}

pub fn fifo_outcome(read: &[u8]) -> FifoOutcome {
    let rest: &[u8] = match read.iter().position(|&b| b != FIFO_FILL) {
        Some(i) => &read[i..],
        None => &[],
    };
    // An error may follow the exec mark (execve itself failed).
    if let Some(i) = rest.iter().position(|&b| b == FIFO_ERROR) {
        return FifoOutcome::Error(String::from_utf8_lossy(&rest[i + 1..]).trim().to_string());
    }
    match rest.first() {
        Some(&FIFO_EXEC) => FifoOutcome::Exec,
        _ => FifoOutcome::Died,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_gone_only_after_the_other_end_closes() {
        let (a, b) = pair().expect("socketpair");
        b.send(&Message::Ready).expect("send");
        assert!(!a.peer_gone(), "a queued message is not a closed peer");
        drop(b);
        assert!(a.peer_gone());
        assert_eq!(a.recv().expect("queued message"), Message::Ready);
    }

    /// A child that fails early exits with the parent's ParentSetupDone unread: its error,
    /// sent before it exited, must still reach the parent (not an ECONNRESET in its place).
    #[test]
    fn error_of_a_peer_that_left_messages_unread_is_not_lost() {
        let (parent, child) = pair().expect("socketpair");
        parent.send(&Message::ParentSetupDone).expect("send");
        child
            .send(&Message::Error("mount /dev: refused".into()))
            .expect("send");
        drop(child);
        assert_eq!(
            parent.recv().expect("the child's error"),
            Message::Error("mount /dev: refused".into())
        );
        assert!(parent.recv().is_err(), "EOF after the last message");
    }

    #[test]
    fn exec_fifo_outcomes() {
        assert_eq!(fifo_outcome(b"0000001"), FifoOutcome::Exec);
        assert_eq!(fifo_outcome(b"1"), FifoOutcome::Exec);
        assert_eq!(
            fifo_outcome(b"0012exec /x: no such file or directory"),
            FifoOutcome::Error("exec /x: no such file or directory".into())
        );
        assert_eq!(
            fifo_outcome(b"02hooks.startContainer[0]: exited"),
            FifoOutcome::Error("hooks.startContainer[0]: exited".into())
        );
        assert_eq!(fifo_outcome(b"0000"), FifoOutcome::Died);
        assert_eq!(fifo_outcome(b""), FifoOutcome::Died);
    }
}
