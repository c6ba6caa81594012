//! The pty handover between a container process and lrun: the process opens a pty in its own
//! devpts and sends the master over the sync channel; lrun passes it to `--console-socket` or
//! keeps it to proxy. `terminal` knows ptys, `sync` knows messages: this glues the two.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use anyhow::{Result, bail};

use crate::sync::{Channel, Message};
use crate::terminal;

/// Container side: a pty from the container's own devpts becomes the process's terminal; the
/// master goes to the parent (for the console socket or its own terminal).
/// As runc's fixStdioPermissions, the slave is then owned by the process's uid (its gid, the
/// devpts `gid=5`, is kept) so a non-root process can use its own terminal.
pub fn setup_terminal(chan: &Channel, uid: u32) -> Result<()> {
    let (master, slave) = terminal::open_pty()?;
    terminal::chown_to_process_user(&slave, uid)?;
    terminal::become_session_leader_on(&slave)?;
    chan.send_with_fd(&Message::Pty, Some(master.as_raw_fd()))?;
    Ok(())
}

/// Parent side: take the pty master the container process sends, and hand it to the console
/// socket (then None) or return it for the caller to proxy.
pub fn receive_pty(chan: &Channel, console_socket: Option<&Path>) -> Result<Option<OwnedFd>> {
    match chan.recv_with_fd()? {
        (Message::Pty, Some(master)) => match console_socket {
            Some(sock) => terminal::send_to_console_socket(sock, master.as_fd()).map(|()| None),
            None => Ok(Some(master)),
        },
        (Message::Error(e), _) => bail!("{e}"),
        (m, _) => bail!("sync protocol: expected the pty, got {m:?}"),
    }
}
