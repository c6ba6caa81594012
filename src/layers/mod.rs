//! Layer images, the node store, shared loop mounts and overlay stacking.
//! STUB: filled in by the layers work (issue 3).

use std::path::{Path, PathBuf};

use anyhow::Result;
use oci_spec::runtime::Spec;

/// Default node store.
pub const DEFAULT_STORE: &str = "/var/lib/lrun";

/// Where layer state lives on the node.
#[derive(Debug, Clone)]
pub struct LayerContext {
    /// Content-addressed store of layer images (default /var/lib/lrun).
    pub store: PathBuf,
    /// The runtime's state root (default /run/lrun); shared layer mounts live below it.
    pub state_root: PathBuf,
}

/// If the bundle is layered, mount its root (shared layer mounts + a per-container overlay)
/// and return the merged directory; `None` for a plain bundle. Runs in the host mount
/// namespace before the container process exists. On error nothing is left mounted.
pub fn prepare_root(
    _ctx: &LayerContext,
    _bundle: &Path,
    _spec: &Spec,
    _container_dir: &Path,
) -> Result<Option<PathBuf>> {
    Ok(None)
}

/// Undo `prepare_root` for a container: idempotent, and safe after a crash at any point.
pub fn release_root(_ctx: &LayerContext, _container_dir: &Path) -> Result<()> {
    Ok(())
}
