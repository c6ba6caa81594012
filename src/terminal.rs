//! Terminals: a pty made inside the container (its own /dev/pts), the console-socket protocol
//! runc uses (the master fd sent over a unix socket with SCM_RIGHTS), and the proxy that lets
//! `lrun run` in the foreground share its own terminal with the container.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{Context, Result};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use nix::sys::termios::{SetArg, Termios, cfmakeraw, tcgetattr, tcsetattr};

/// Open a new pty in the container's devpts: returns (master, slave).
pub fn open_pty() -> Result<(OwnedFd, OwnedFd)> {
    let master = nix::fcntl::open(
        "/dev/ptmx",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .context("open /dev/ptmx in the container")?;
    rustix::pty::unlockpt(&master)
        .map_err(std::io::Error::from)
        .context("unlock pty")?;
    // TIOCGPTPEER opens the slave through the master: no path lookup that could be raced.
    use rustix::pty::OpenptFlags;
    let slave = rustix::pty::ioctl_tiocgptpeer(&master, OpenptFlags::RDWR | OpenptFlags::NOCTTY)
        .map_err(std::io::Error::from)
        .context("open pty slave (TIOCGPTPEER)")?;
    Ok((master, slave))
}

/// Give the pty `slave` to the process's `uid`, keeping its group (runc's fixStdioPermissions:
/// only the uid changes; EINVAL or EPERM, an owner or group not mapped in a user namespace,
/// leave it as it is).
pub fn chown_to_process_user(slave: &OwnedFd, uid: u32) -> Result<()> {
    let st = nix::sys::stat::fstat(slave).context("fstat the pty slave")?;
    if st.st_uid == uid {
        return Ok(());
    }
    match nix::unistd::fchown(
        slave,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(st.st_gid)),
    ) {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::EPERM) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("chown the pty to uid {uid}")),
    }
}

/// Make `slave` the calling process's controlling terminal and its stdio.
pub fn become_session_leader_on(slave: &OwnedFd) -> Result<()> {
    nix::unistd::setsid().context("setsid")?;
    rustix::process::ioctl_tiocsctty(slave)
        .map_err(std::io::Error::from)
        .context("make the pty the controlling terminal")?;
    nix::unistd::dup2_stdin(slave).context("dup2 pty onto stdio")?;
    nix::unistd::dup2_stdout(slave).context("dup2 pty onto stdio")?;
    nix::unistd::dup2_stderr(slave).context("dup2 pty onto stdio")?;
    Ok(())
}

/// Send the pty master to a `--console-socket` (what runc does; podman and containerd listen).
pub fn send_to_console_socket(path: &Path, master: BorrowedFd) -> Result<()> {
    let sock = UnixStream::connect(path)
        .with_context(|| format!("--console-socket {}", path.display()))?;
    let fds = [master.as_raw_fd()];
    let name = b"/dev/ptmx";
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(name)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .with_context(|| format!("send the pty to {}", path.display()))?;
    Ok(())
}

/// Copy the window size of `from` (our terminal) to `to` (the container's pty).
pub fn copy_window_size(from: BorrowedFd, to: BorrowedFd) {
    if let Ok(ws) = rustix::termios::tcgetwinsize(from) {
        let _ = rustix::termios::tcsetwinsize(to, ws);
    }
}

/// Our own terminal in raw mode for as long as this lives; restored on drop, also on errors.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    pub fn enter(fd: BorrowedFd) -> Result<Option<RawMode>> {
        if !nix::unistd::isatty(fd).unwrap_or(false) {
            return Ok(None);
        }
        let saved = tcgetattr(fd).context("tcgetattr")?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(fd, SetArg::TCSANOW, &raw).context("tcsetattr raw")?;
        Ok(Some(RawMode { saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// Copy what is readable on `from` to `to`. Returns false at EOF or on error.
pub fn pump(from: BorrowedFd, to: BorrowedFd) -> bool {
    let mut buf = [0u8; 16 * 1024];
    let n = match nix::unistd::read(from, &mut buf) {
        Ok(0) | Err(_) => return false,
        Ok(n) => n,
    };
    let mut off = 0;
    while off < n {
        match nix::unistd::write(to, &buf[off..n]) {
            Ok(w) => off += w,
            Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => continue,
            Err(_) => return false,
        }
    }
    true
}
