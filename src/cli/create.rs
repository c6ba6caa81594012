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
    /// First fetch the bundle's missing layers from this directory or http(s):// URL.
    #[arg(long, value_name = "SOURCE")]
    pub pull: Option<String>,
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

/// With `--pull SOURCE`, fetch the layers a layered bundle names (and their dependencies)
/// that the store lacks; a plain bundle needs nothing.
pub fn pull_first(g: &Globals, a: &Args) -> anyhow::Result<()> {
    let Some(src) = &a.pull else { return Ok(()) };
    let b = crate::bundle::Bundle::load(&a.bundle)?;
    let Some(ls) = crate::layers::layer_spec(&b.spec)? else {
        return Ok(());
    };
    // Paths name local files: create imports those itself.
    let refs: Vec<_> = ls
        .tops
        .into_iter()
        .filter(|r| !matches!(r, crate::layers::LayerRef::Path(_)))
        .collect();
    if refs.is_empty() {
        return Ok(());
    }
    let src = crate::distribution::parse(src)?;
    let store = crate::layers::Store::new(&g.store);
    crate::distribution::pull::pull(&store, &*src, &refs, &Default::default())?;
    Ok(())
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    pull_first(g, &a)?;
    container::create(&g.runtime(), &a.options(false))?;
    Ok(0)
}
