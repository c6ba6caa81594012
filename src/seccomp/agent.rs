//! Handing the notify listener to the seccomp agent at linux.seccomp.listenerPath, as the
//! spec's "container process state" message: one connection, JSON payload, the fd as
//! SCM_RIGHTS in the first sendmsg.

use std::io::{IoSlice, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{Context, Result, bail};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

/// A connection to the seccomp agent, made while the host's paths are still visible (before
/// pivot_root); the listener goes over it once the filter is loaded, just before exec.
pub struct Agent {
    sock: UnixStream,
    path: std::path::PathBuf,
    pid: i32,
    metadata: Option<String>,
    state_json: Vec<u8>,
}

impl Agent {
    pub fn connect(
        path: &Path,
        pid: i32,
        metadata: Option<&str>,
        state_json: Vec<u8>,
    ) -> Result<Agent> {
        let sock = UnixStream::connect(path)
            .with_context(|| format!("connect linux.seccomp.listenerPath {}", path.display()))?;
        Ok(Agent {
            sock,
            path: path.to_path_buf(),
            pid,
            metadata: metadata.map(str::to_owned),
            state_json,
        })
    }

    /// The container process's pid as the runtime sees it, once known (`exec` connects before
    /// it forks the process).
    pub fn set_pid(&mut self, pid: i32) {
        self.pid = pid;
    }

    pub fn send(mut self, listener: BorrowedFd<'_>) -> Result<()> {
        send_on(
            &mut self.sock,
            &self.path,
            listener,
            self.pid,
            self.metadata.as_deref(),
            &self.state_json,
        )
    }
}

/// Send `listener` to the agent listening at `path`. `pid` is the container process as the
/// runtime sees it; `state_json` the container's state (runtime.md#state) as `state` prints it.
pub fn send_listener(
    path: &Path,
    listener: BorrowedFd<'_>,
    pid: i32,
    metadata: Option<&str>,
    state_json: &[u8],
) -> Result<()> {
    let mut sock = UnixStream::connect(path)
        .with_context(|| format!("connect linux.seccomp.listenerPath {}", path.display()))?;
    send_on(&mut sock, path, listener, pid, metadata, state_json)
}

fn send_on(
    sock: &mut UnixStream,
    path: &Path,
    listener: BorrowedFd<'_>,
    pid: i32,
    metadata: Option<&str>,
    state_json: &[u8],
) -> Result<()> {
    let state: serde_json::Value =
        serde_json::from_slice(state_json).context("container state for the seccomp agent")?;
    let version = state
        .get("ociVersion")
        .and_then(|v| v.as_str())
        .unwrap_or("1.2.0")
        .to_owned();
    let mut msg = serde_json::json!({
        "ociVersion": version,
        "fds": ["seccompFd"],
        "pid": pid,
        "state": state,
    });
    if let Some(m) = metadata {
        msg["metadata"] = serde_json::Value::String(m.to_owned());
    }
    let payload = serde_json::to_vec(&msg).context("serialize the container process state")?;
    let what = || format!("linux.seccomp.listenerPath {}", path.display());
    let fds = [listener.as_raw_fd()];
    let sent = sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(&payload)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .with_context(|| format!("sendmsg to {}", what()))?;
    if sent == 0 {
        bail!("sendmsg to {}: nothing sent", what());
    }
    // The fd went with the first call; a stream may take the rest in more writes.
    sock.write_all(&payload[sent..])
        .with_context(|| format!("write to {}", what()))?;
    // Dropping the stream closes the connection, which tells the agent the message is whole.
    Ok(())
}
