//! NOTIFY_SOCKET (sd_notify) pass-through: the container gets a socket of lrun's, bind-mounted
//! at /run/notify, and lrun relays what the service says (READY=1, STATUS=...) to the socket
//! lrun itself was given, so a systemd unit with Type=notify can run a container.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// Where the socket directory appears inside the container.
pub const CONTAINER_DIR: &str = "/run/notify";
pub const SOCKET_NAME: &str = "notify.sock";

/// The host's notify socket, if lrun runs under a supervisor that set one. Abstract sockets
/// ('@' names) cannot be bind-mounted, but lrun relays, so only the host side needs them.
pub fn host_socket() -> Option<PathBuf> {
    std::env::var_os("NOTIFY_SOCKET")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
}

/// The container's value of NOTIFY_SOCKET.
pub fn container_env() -> String {
    format!("NOTIFY_SOCKET={CONTAINER_DIR}/{SOCKET_NAME}")
}

pub struct Relay {
    sock: UnixDatagram,
    host: PathBuf,
}

impl Relay {
    /// Bind the container-facing socket in `dir` (replacing a stale one).
    pub fn bind(dir: &Path, host: PathBuf) -> Result<Relay> {
        let path = dir.join(SOCKET_NAME);
        crate::utils::remove_file_if_exists(&path)?;
        // A socket address holds at most 107 bytes, which a long --root and id exceed: bind
        // through the directory's fd, whose /proc/self/fd path always fits.
        let dir_fd = nix::fcntl::open(
            dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("open {}", dir.display()))?;
        let short = format!("/proc/self/fd/{}/{SOCKET_NAME}", dir_fd.as_raw_fd());
        let sock =
            UnixDatagram::bind(&short).with_context(|| format!("bind {}", path.display()))?;
        // The service may run as any user.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .with_context(|| format!("chmod {}", path.display()))?;
        Ok(Relay { sock, host })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Relay one datagram. The container's idea of MAINPID means nothing on the host: it is
    /// replaced by `mainpid` when given, dropped otherwise. Returns whether it said READY=1.
    pub fn forward_one(&self, mainpid: Option<i32>) -> Result<bool> {
        let mut buf = vec![0u8; 64 * 1024];
        let n = self
            .sock
            .recv(&mut buf)
            .context("receive from the notify socket")?;
        let text = String::from_utf8_lossy(&buf[..n]);
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with("MAINPID="))
            .map(str::to_string)
            .collect();
        let ready = lines.iter().any(|l| l == "READY=1");
        if let Some(pid) = mainpid.filter(|_| ready) {
            lines.push(format!("MAINPID={pid}"));
        }
        let out = UnixDatagram::unbound().context("socket")?;
        let host = self.host.to_string_lossy();
        let msg = lines.join("\n");
        let sent = match host.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                    .context("abstract NOTIFY_SOCKET name")?;
                out.send_to_addr(msg.as_bytes(), &addr)
            }
            None => out.send_to(msg.as_bytes(), &self.host),
        };
        sent.with_context(|| format!("relay to NOTIFY_SOCKET {host}"))?;
        Ok(ready)
    }
}
