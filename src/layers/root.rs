//! A layered container's root: mounting its closure (shared layer mounts, `shared.rs`) under a
//! per-container overlay with its writable upper, and releasing it all again.
//!
//! ```text
//! STATE/<id>/root/                mode 0700 (the merged root holds setuid programs)
//! STATE/<id>/root/rw/{upper,work} the writable upper (a tmpfs of its own with upper=tmpfs)
//! STATE/<id>/root/merged          where the overlay (the container's root) is attached
//! ```
//! The overlay is built detached (`overlay::build_detached`) and attached at `merged` only in
//! the container's own mount namespace (`LayeredRoot::detached`, attached by the init): the
//! runtime's mount table holds the shared layer mounts and nothing per container, so neither
//! a new container's namespace (copied from it at clone) nor any reader of the runtime's
//! mountinfo pays for the containers that exist. Kernels without `lowerdir+` (before 6.8)
//! get it mounted at `merged` in the runtime's namespace, as lrun did before.
//! What is taken is recorded first (`RootRecord`, kept by the engine in state.json), so a
//! crash at any point leaves enough for `release_root` (delete --force) and gc.

use std::collections::HashSet;
use std::fs;
use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::mount::{MntFlags, MsFlags};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use super::header::{Digest, Header};
use super::shared::Shared;
use super::spec::{LayerSpec, UpperMode, layer_spec};
use super::store::{LayerRef, Store};
use super::{LayerContext, closure, overlay};

/// Where containers created before the record moved into state.json keep it.
const LEGACY_RECORD: &str = "layers.json";
/// Mode 0700: the merged root holds the image's setuid programs, which host users must not
/// be able to reach through the state directory (mode 0711).
const PRIVATE_DIR: &str = "root";
const RW_DIR: &str = "root/rw";
const MERGED_DIR: &str = "root/merged";

/// What prepare_root takes, recorded before it takes anything so release_root can undo it
/// after a crash at any point. The engine stores it in the container's state.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootRecord {
    /// Layer digests (hex), top-most first.
    pub layers: Vec<String>,
    pub upper: UpperMode,
}

impl RootRecord {
    /// The digests it names (unparseable entries skipped).
    pub fn digests(&self) -> HashSet<Digest> {
        self.layers
            .iter()
            .filter_map(|h| Digest::parse(h).ok())
            .collect()
    }
}

/// A layered root that `prepare_layered_root` built.
pub struct LayeredRoot {
    /// Where the container's root is (or is to be) attached: STATE/<id>/root/merged.
    pub merged: PathBuf,
    /// The overlay, built detached: whoever attaches it at `merged` decides in which mount
    /// namespace it exists (`attach_here`, or the init in the container's own). `None` when
    /// it is mounted at `merged` in the runtime's namespace already (kernels before 6.8).
    pub detached: Option<OwnedFd>,
}

impl LayeredRoot {
    /// Attach the root at `merged` in the caller's mount namespace (a container that shares
    /// the runtime's, and the library's callers) and return that path.
    pub fn attach_here(self) -> Result<PathBuf> {
        if let Some(m) = &self.detached {
            overlay::attach(m, &self.merged)?;
        }
        Ok(self.merged)
    }
}

/// The layers.json of a container created before the record moved into state.json.
pub fn read_legacy_record(container_dir: &Path) -> Result<Option<RootRecord>> {
    let p = container_dir.join(LEGACY_RECORD);
    match fs::read(&p) {
        Ok(t) => serde_json::from_slice(&t)
            .map(Some)
            .with_context(|| format!("parse {}", p.display())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", p.display())),
    }
}

/// Resolve the tops to the ordered closure (top-most first), importing path references.
pub fn resolve_closure(
    store: &Store,
    tops: &[LayerRef],
    bundle: &Path,
) -> Result<Vec<(Digest, Header)>> {
    let mut digests = Vec::with_capacity(tops.len());
    let mut missing = Vec::new();
    for t in tops {
        match store.resolve(t, bundle)? {
            Some(d) => digests.push(d),
            None => missing.push(t.to_string()),
        }
    }
    if !missing.is_empty() {
        bail!(
            "layer{} not in the store {}: {} {PULL_HINT}",
            if missing.len() == 1 { "" } else { "s" },
            store.root.display(),
            missing.join(", ")
        );
    }
    closure::resolve(&digests, &mut |d| store.header(d)).map_err(|e| {
        match e.downcast_ref::<closure::MissingLayers>() {
            Some(missing) => anyhow::anyhow!("{missing} {PULL_HINT}"),
            None => e,
        }
    })
}

/// How to get missing layers, appended to the errors that name them.
const PULL_HINT: &str = "(fetch with --pull SOURCE or `lrun layer pull SOURCE LAYER...`)";

fn container_id(container_dir: &Path) -> Result<String> {
    container_dir
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .with_context(|| format!("container dir {}: no usable name", container_dir.display()))
}

/// If the bundle is layered, mount its root (shared layer mounts + a per-container overlay)
/// at the merged directory in the caller's mount namespace and return that directory; `None`
/// for a plain bundle. On error nothing is left mounted. (`create` uses
/// `prepare_layered_root`, which leaves the overlay detached for the container's namespace.)
///
/// `record` is called with what will be taken before anything is: the engine stores it with
/// the container (state.json), and hands it back to `release_root`, which trusts it.
pub fn prepare_root(
    ctx: &LayerContext,
    bundle: &Path,
    spec: &Spec,
    container_dir: &Path,
    record: &mut dyn FnMut(&RootRecord) -> Result<()>,
) -> Result<Option<PathBuf>> {
    let Some(ls) = layer_spec(spec)? else {
        return Ok(None);
    };
    let mut taken = None;
    let mut keep = |r: &RootRecord| {
        taken = Some(r.clone());
        record(r)
    };
    let root = prepare_layered_root(ctx, bundle, spec, &ls, container_dir, &mut keep)?;
    root.attach_here().map(Some).map_err(|e| {
        match release_root(ctx, container_dir, taken.as_ref()) {
            Ok(()) => e,
            Err(e2) => anyhow::anyhow!("{e:#} (and undoing it failed: {e2:#})"),
        }
    })
}

/// `prepare_root` for a bundle whose layer annotations the caller has parsed already.
pub fn prepare_layered_root(
    ctx: &LayerContext,
    bundle: &Path,
    spec: &Spec,
    ls: &LayerSpec,
    container_dir: &Path,
    record: &mut dyn FnMut(&RootRecord) -> Result<()>,
) -> Result<LayeredRoot> {
    let store = Store::new(&ctx.store);
    let stack = resolve_closure(&store, &ls.tops, bundle)?;
    let legacy = container_dir.join(LEGACY_RECORD);
    if legacy.exists() {
        bail!(
            "{} exists: this container already holds layers",
            legacy.display()
        );
    }
    let rec = RootRecord {
        layers: stack.iter().map(|(d, _)| d.hex()).collect(),
        upper: ls.upper.clone(),
    };
    // Recorded before anything is taken: release_root trusts this list.
    record(&rec)?;
    match mount_stack(ctx, &store, &stack, &ls.upper, spec, container_dir) {
        Ok(p) => Ok(p),
        Err(e) => {
            if let Err(e2) = release_root(ctx, container_dir, Some(&rec)) {
                return Err(anyhow::anyhow!("{e:#} (and undoing it failed: {e2:#})"));
            }
            Err(e)
        }
    }
}

fn mount_stack(
    ctx: &LayerContext,
    store: &Store,
    stack: &[(Digest, Header)],
    upper: &UpperMode,
    spec: &Spec,
    container_dir: &Path,
) -> Result<LayeredRoot> {
    let shared = Shared::new(&ctx.state_root, ctx.idle);
    let id = container_id(container_dir)?;
    // gc judges a reference by the state dir it names, from any working directory.
    let owner = std::path::absolute(container_dir)
        .with_context(|| format!("absolute path of {}", container_dir.display()))?;
    let mut lowers = Vec::with_capacity(stack.len());
    for (d, h) in stack {
        lowers.push(shared.acquire(d, h, &store.image_path(d), &id, &owner)?);
    }
    let private = container_dir.join(PRIVATE_DIR);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .with_context(|| format!("create {}", private.display()))?;
    let rw = container_dir.join(RW_DIR);
    let upper_dirs = match upper {
        UpperMode::None => None,
        UpperMode::State | UpperMode::Tmpfs(_) => {
            fs::create_dir(&rw).with_context(|| format!("create {}", rw.display()))?;
            if let UpperMode::Tmpfs(opts) = upper {
                let data = if opts.is_empty() {
                    "mode=0700".to_string()
                } else {
                    format!("mode=0700,{opts}")
                };
                nix::mount::mount(
                    Some("tmpfs"),
                    &rw,
                    Some("tmpfs"),
                    MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
                    Some(data.as_str()),
                )
                .with_context(|| format!("mount tmpfs ({data}) on {}", rw.display()))?;
            }
            let (u, w) = (rw.join("upper"), rw.join("work"));
            fs::create_dir(&u).with_context(|| format!("create {}", u.display()))?;
            fs::create_dir(&w).with_context(|| format!("create {}", w.display()))?;
            // The merged root takes the upper root's owner and mode: give it the top layer's
            // mode and the container's root user, so `/` looks as the image made it.
            let top = fs::metadata(&lowers[0])
                .with_context(|| format!("stat {}", lowers[0].display()))?;
            fs::set_permissions(&u, fs::Permissions::from_mode(top.mode() & 0o7777))
                .with_context(|| format!("chmod {}", u.display()))?;
            let (uid, gid) = root_owner(spec, top.uid(), top.gid());
            std::os::unix::fs::chown(&u, Some(uid), Some(gid))
                .with_context(|| format!("chown {}", u.display()))?;
            Some((u, w))
        }
    };
    let merged = container_dir.join(MERGED_DIR);
    fs::create_dir(&merged).with_context(|| format!("create {}", merged.display()))?;
    let up = upper_dirs
        .as_ref()
        .map(|(u, w)| overlay::Upper { upper: u, work: w });
    let detached = match overlay::build_detached(&lowers, up.as_ref())? {
        Some(m) => {
            if matches!(upper, UpperMode::Tmpfs(_)) {
                // The overlay holds the tmpfs now (its own private mount of it): the runtime's
                // namespace needs no mount of it either.
                nix::mount::umount2(&rw, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW)
                    .with_context(|| format!("detach the upper tmpfs {}", rw.display()))?;
            }
            Some(m)
        }
        None => {
            overlay::mount_legacy_api(&lowers, up, &merged)?;
            None
        }
    };
    // Idle layers past their time go with the next create that looks; a failure there is
    // no reason to fail this container.
    if let Err(e) = shared.sweep_idle(false) {
        crate::logging::warn(&format!("unmounting idle layers: {e:#}"));
    }
    Ok(LayeredRoot { merged, detached })
}

/// Host ids of the container's root user: the image's owner of `/` mapped through the
/// user namespace mappings, if any.
fn root_owner(spec: &Spec, uid: u32, gid: u32) -> (u32, u32) {
    let map = |id: u32, maps: Option<&Vec<oci_spec::runtime::LinuxIdMapping>>| -> u32 {
        let Some(maps) = maps else { return id };
        for m in maps {
            if id >= m.container_id() && id - m.container_id() < m.size() {
                return m.host_id() + (id - m.container_id());
            }
        }
        id
    };
    let linux = spec.linux().as_ref();
    (
        map(uid, linux.and_then(|l| l.uid_mappings().as_ref())),
        map(gid, linux.and_then(|l| l.gid_mappings().as_ref())),
    )
}

/// Undo `prepare_root` for a container: idempotent, and safe after a crash at any point.
/// `record` is what prepare_root handed the engine; `None` for a container that records
/// none, or one created before the record moved into state.json (its layers.json is read).
pub fn release_root(
    ctx: &LayerContext,
    container_dir: &Path,
    record: Option<&RootRecord>,
) -> Result<()> {
    let legacy = container_dir.join(LEGACY_RECORD);
    let read;
    let record = match record {
        Some(r) => r,
        None => match read_legacy_record(container_dir)? {
            Some(r) => {
                read = r;
                &read
            }
            // Nothing was taken: prepare_root records before anything else.
            None => return Ok(()),
        },
    };
    let private = container_dir.join(PRIVATE_DIR);
    let merged = container_dir.join(MERGED_DIR);
    unmount_all(&merged)?;
    remove_dir_if_exists(&merged)?;
    let rw = container_dir.join(RW_DIR);
    unmount_all(&rw)?;
    match fs::remove_dir_all(&rw) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove {}", rw.display())),
    }
    remove_dir_if_exists(&private)?;
    let shared = Shared::new(&ctx.state_root, ctx.idle);
    let id = container_id(container_dir)?;
    for hex in &record.layers {
        let d = Digest::parse(hex).context("layer record")?;
        shared.release(&d, &id)?;
    }
    // Other layers' expiry is no reason to fail this delete.
    if let Err(e) = shared.sweep_idle(false) {
        crate::logging::warn(&format!("unmounting idle layers: {e:#}"));
    }
    // Once for all layers, not per layer: only the last release can empty it.
    shared.remove_dir_if_empty();
    crate::utils::remove_file_if_exists(&legacy)
}

/// Unmount everything stacked on `p` (a crashed retry could have mounted twice). umount2
/// itself says when nothing is left (EINVAL: not a mount point; ENOENT: no such path), which
/// saves two stats per round.
fn unmount_all(p: &Path) -> Result<()> {
    for _ in 0..16 {
        match nix::mount::umount2(p, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => {}
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("umount {}", p.display())),
        }
    }
    bail!("{} is still mounted after 16 unmounts", p.display())
}

fn remove_dir_if_exists(p: &Path) -> Result<()> {
    match fs::remove_dir(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("rmdir {}", p.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::spec::tests::spec;

    #[test]
    fn root_owner_maps_through_user_namespace() {
        let v = serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "linux": {
                "namespaces": [{"type": "user"}],
                "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
                "gidMappings": [{"containerID": 0, "hostID": 200000, "size": 65536}]
            }
        });
        let s = crate::bundle::parse_config(v.to_string().as_bytes()).unwrap();
        assert_eq!(root_owner(&s, 0, 5), (100000, 200005));
        assert_eq!(root_owner(&spec(&[], false), 0, 0), (0, 0));
    }
}
