//! The node side of layers: image format, store, closure, shared mounts, container roots, gc.
//!
//! A layered bundle names its top layers in the `org.lrun.layers` annotation (`spec.rs`);
//! `root::prepare_root` resolves their dependency closure from the image headers
//! (`closure.rs`), mounts each layer once per node (`shared.rs`, reference-counted, through
//! `loopdev.rs` where needed), and stacks them with a per-container writable upper
//! (`overlay.rs`). `store.rs` is the content-addressed store, `header.rs` and `pack.rs` the
//! image format, `gc.rs` what is no longer used. Getting layers onto the node is
//! `crate::distribution`'s job; converting OCI images, `crate::image`'s.
//! runtime-spec/layers.md describes the format and the protocols.

pub mod closure;
pub mod gc;
pub mod header;
pub mod loopdev;
pub mod overlay;
pub mod pack;
pub mod root;
pub mod shared;
pub mod spec;
pub mod store;

use std::path::{Path, PathBuf};

pub use gc::{GcReport, gc, gc_mounts, gc_with, layers_in_use, remove};
pub use header::{Digest, FsType, Header};
pub use root::{
    LayeredRoot, RootRecord, prepare_layered_root, prepare_root, release_root, resolve_closure,
};
pub use shared::IdlePolicy;
pub use spec::{ANNOTATION_LAYERS, ANNOTATION_UPPER, LayerSpec, UpperMode, layer_spec};
pub use store::{LayerRef, Store};

/// Default node store.
pub const DEFAULT_STORE: &str = "/var/lib/lrun";

/// Where layer state lives on the node.
#[derive(Debug, Clone)]
pub struct LayerContext {
    /// Content-addressed store of layer images (default /var/lib/lrun).
    pub store: PathBuf,
    /// The runtime's state root (default /run/lrun); shared layer mounts live below it.
    pub state_root: PathBuf,
    /// The root record a container's state dir holds (`None`: none, or unreadable). The
    /// engine stores records (state.json), so it says how to read them: gc asks for every
    /// container of `state_root`, and for the state dir each layer reference names.
    pub recorded: fn(&Path) -> Option<RootRecord>,
    /// How long layer mounts nobody uses stay mounted for the next container.
    pub idle: IdlePolicy,
}
