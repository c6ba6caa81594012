//! `lrun create ID --bundle DIR`.

use std::path::PathBuf;

use super::Globals;
use crate::container::{self, CreateOptions};

#[derive(clap::Args, Debug)]
#[group(id = "create_args")]
pub struct Args {
    /// Bundle directory (config.json and the root filesystem).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Unix socket to receive the pty master of a terminal container.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Write the container's init pid here.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Use MS_MOVE + chroot instead of pivot_root (for a rootfs on a ramdisk).
    #[arg(long)]
    pub no_pivot: bool,
    /// Accepted for runc compatibility: lrun creates no session keyring.
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass this many extra fds (from 3 up) to the container process.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: i32,
    pub id: String,
}

impl Args {
    pub fn options(&self, foreground: bool) -> CreateOptions<'_> {
        CreateOptions {
            id: &self.id,
            bundle: &self.bundle,
            pid_file: self.pid_file.as_deref(),
            console_socket: self.console_socket.as_deref(),
            no_pivot: self.no_pivot,
            preserve_fds: self.preserve_fds,
            foreground,
        }
    }
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    container::create(&g.runtime(), &a.options(false))?;
    Ok(0)
}
