//! Layer images, the node store, shared loop mounts and overlay stacking.
//!
//! A layered bundle names its top layers in the `org.lrun.layers` annotation; `prepare_root`
//! resolves their dependency closure from the image headers, mounts each layer once per node
//! (shared, reference-counted), and stacks them with a per-container writable upper.
//! runtime-spec/layers.md describes the format and the protocols.

pub mod closure;
pub mod header;
pub mod loopdev;
pub mod oci;
pub mod overlay;
pub mod pack;
pub mod pull;
pub mod shared;
pub mod source;
pub mod store;

use std::collections::HashSet;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::mount::{MntFlags, MsFlags};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

pub use header::{Digest, FsType, Header};
use shared::Shared;
pub use store::{LayerRef, Store};

/// Default node store.
pub const DEFAULT_STORE: &str = "/var/lib/lrun";

/// Annotation naming the top layers (top-most first).
pub const ANNOTATION_LAYERS: &str = "org.lrun.layers";
/// Annotation choosing where the writable upper lives.
pub const ANNOTATION_UPPER: &str = "org.lrun.layers.upper";

/// Files lrun keeps in a layered container's state directory.
const RECORD: &str = "layers.json";
/// Mode 0700: the merged root holds the image's setuid programs, which host users must not
/// be able to reach through the state directory (mode 0711).
const PRIVATE_DIR: &str = "root";
const RW_DIR: &str = "root/rw";
const MERGED_DIR: &str = "root/merged";

/// Where layer state lives on the node.
#[derive(Debug, Clone)]
pub struct LayerContext {
    /// Content-addressed store of layer images (default /var/lib/lrun).
    pub store: PathBuf,
    /// The runtime's state root (default /run/lrun); shared layer mounts live below it.
    pub state_root: PathBuf,
}

/// Where a container's writes go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpperMode {
    /// A directory in the container's state dir (on the state root's filesystem).
    State,
    /// A tmpfs of its own, mounted with the given options (e.g. "size=64m").
    Tmpfs(String),
    /// No upper: root.readonly is true.
    None,
}

/// What prepare_root recorded before taking anything, so release_root can undo it after a
/// crash at any point.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    /// Layer digests (hex), top-most first.
    layers: Vec<String>,
    upper: UpperMode,
}

/// The layer part of a bundle, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSpec {
    pub tops: Vec<LayerRef>,
    pub upper: UpperMode,
}

/// Read the bundle's layer annotations. `None` for a plain bundle.
pub fn layer_spec(spec: &Spec) -> Result<Option<LayerSpec>> {
    let Some(ann) = spec.annotations().as_ref() else {
        return Ok(None);
    };
    let Some(value) = ann.get(ANNOTATION_LAYERS) else {
        return Ok(None);
    };
    let items: Vec<String> = if value.trim_start().starts_with('[') {
        serde_json::from_str(value)
            .with_context(|| format!("annotation {ANNOTATION_LAYERS}: not a JSON string array"))?
    } else {
        value.split(',').map(|s| s.trim().to_string()).collect()
    };
    let mut tops = Vec::new();
    for it in items.iter().filter(|s| !s.is_empty()) {
        tops.push(LayerRef::parse(it).with_context(|| format!("annotation {ANNOTATION_LAYERS}"))?);
    }
    if tops.is_empty() {
        bail!("annotation {ANNOTATION_LAYERS}: names no layer");
    }
    let readonly = spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    let upper = if readonly {
        UpperMode::None
    } else {
        match ann.get(ANNOTATION_UPPER).map(|s| s.trim()) {
            None | Some("") | Some("state") => UpperMode::State,
            Some(v) => {
                let (mode, opts) = v.split_once(',').unwrap_or((v, ""));
                if mode != "tmpfs" {
                    bail!(
                        "annotation {ANNOTATION_UPPER}: {v:?}: use \"state\" or \"tmpfs[,OPTIONS]\""
                    );
                }
                if opts.contains(['\0', '\n']) {
                    bail!("annotation {ANNOTATION_UPPER}: bad tmpfs options {opts:?}");
                }
                UpperMode::Tmpfs(opts.to_string())
            }
        }
    };
    Ok(Some(LayerSpec { tops, upper }))
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
/// and return the merged directory; `None` for a plain bundle. Runs in the host mount
/// namespace before the container process exists. On error nothing is left mounted.
pub fn prepare_root(
    ctx: &LayerContext,
    bundle: &Path,
    spec: &Spec,
    container_dir: &Path,
) -> Result<Option<PathBuf>> {
    let Some(ls) = layer_spec(spec)? else {
        return Ok(None);
    };
    let store = Store::new(&ctx.store);
    let stack = resolve_closure(&store, &ls.tops, bundle)?;
    let record_path = container_dir.join(RECORD);
    if record_path.exists() {
        bail!(
            "{} exists: this container already holds layers",
            record_path.display()
        );
    }
    let record = Record {
        layers: stack.iter().map(|(d, _)| d.hex()).collect(),
        upper: ls.upper.clone(),
    };
    // Recorded before anything is taken: release_root trusts this list.
    let data = serde_json::to_vec(&record).context("serialise layers.json")?;
    crate::utils::write_atomic(&record_path, &data, 0o600)?;
    match mount_stack(ctx, &store, &stack, &ls.upper, spec, container_dir) {
        Ok(p) => Ok(Some(p)),
        Err(e) => {
            if let Err(e2) = release_root(ctx, container_dir) {
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
) -> Result<PathBuf> {
    let shared = Shared::new(&ctx.state_root);
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
    overlay::mount(&lowers, up, &merged)?;
    Ok(merged)
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
pub fn release_root(ctx: &LayerContext, container_dir: &Path) -> Result<()> {
    let record_path = container_dir.join(RECORD);
    let record: Record = match fs::read(&record_path) {
        Ok(t) => serde_json::from_slice(&t)
            .with_context(|| format!("parse {}", record_path.display()))?,
        // Nothing was taken: prepare_root writes the record before anything else.
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("read {}", record_path.display())),
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
    let shared = Shared::new(&ctx.state_root);
    let id = container_id(container_dir)?;
    for hex in &record.layers {
        let d = Digest::parse(hex).with_context(|| format!("{}", record_path.display()))?;
        shared.release(&d, &id)?;
    }
    // Once for all layers, not per layer: only the last release can empty it.
    shared.remove_dir_if_empty();
    crate::utils::remove_file_if_exists(&record_path)
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

/// Digests a container's state dir records (empty if it records none).
fn recorded_layers(container_dir: &Path) -> HashSet<Digest> {
    let Ok(t) = fs::read(container_dir.join(RECORD)) else {
        return HashSet::new();
    };
    let Ok(r) = serde_json::from_slice::<Record>(&t) else {
        return HashSet::new();
    };
    r.layers
        .iter()
        .filter_map(|h| Digest::parse(h).ok())
        .collect()
}

/// Every layer some container of this state root records, whether or not it holds the
/// reference yet (a create in progress).
pub fn layers_in_use(ctx: &LayerContext) -> Result<HashSet<Digest>> {
    let mut used = HashSet::new();
    let rd = match fs::read_dir(&ctx.state_root) {
        Ok(r) => r,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(used),
        Err(e) => return Err(e).with_context(|| format!("read {}", ctx.state_root.display())),
    };
    for e in rd.flatten() {
        if e.file_name() == shared::DIR_NAME {
            continue;
        }
        used.extend(recorded_layers(&e.path()));
    }
    Ok(used)
}

/// What `gc` did.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    /// References whose container no longer records the layer (its creator or deleter died).
    pub stale_references: usize,
    /// Shared layer mounts nobody used any more.
    pub unmounted: usize,
    /// Images removed from the store (or that would be, with dry_run).
    pub removed: Vec<String>,
    pub bytes_freed: u64,
    /// Temp files of interrupted imports.
    pub temp_files: usize,
}

/// Drop stale references and unused shared mounts, then remove from the store every image
/// that no container of this state root uses and no kept image depends on.
///
/// Containers of other state roots sharing the store are not seen; removing an image they
/// have mounted does not disturb them (the mount holds the file), only their next create.
pub fn gc(ctx: &LayerContext) -> Result<GcReport> {
    gc_with(ctx, false)
}

/// Drop references whose container no longer records the layer and unmount shared layers
/// nobody uses; the store is left alone (`lrun gc` after crashes). Returns (stale references,
/// unmounted layers).
pub fn gc_mounts(ctx: &LayerContext) -> Result<(usize, usize)> {
    sweep_mounts(&Shared::new(&ctx.state_root))
}

fn sweep_mounts(shared: &Shared) -> Result<(usize, usize)> {
    let (stale, unmounted, _) =
        shared.sweep(&|d, dir| dir.is_absolute() && recorded_layers(dir).contains(d))?;
    Ok((stale, unmounted))
}

/// `gc`, or with `dry_run` only report which images it would remove.
pub fn gc_with(ctx: &LayerContext, dry_run: bool) -> Result<GcReport> {
    let mut report = GcReport::default();
    let shared = Shared::new(&ctx.state_root);
    let store = Store::new(&ctx.store);
    let _lock = if store.root.exists() {
        Some(store.lock()?)
    } else {
        None
    };
    if !dry_run {
        let (stale, unmounted) = sweep_mounts(&shared)?;
        report.stale_references = stale;
        report.unmounted = unmounted;
        report.temp_files = store.clean_tmp()? + pull::clean_partials(&store)?;
    }
    let mut keep = layers_in_use(ctx)?;
    for d in shared.layers()? {
        if !shared.users(&d)?.is_empty() {
            keep.insert(d);
        }
    }
    let (entries, damaged) = store.scan()?;
    // A stored file the store cannot vouch for is removed even if in use: what it holds is
    // not what its digest names (running containers keep their mount).
    for b in &damaged {
        if !dry_run {
            store.remove_damaged(b)?;
        }
        report
            .removed
            .push(format!("{} (damaged: {})", b.path.display(), b.problem));
        report.bytes_freed += b.size;
    }
    // Mark: everything reachable from what is in use.
    let mut stack: Vec<Digest> = keep.iter().copied().collect();
    while let Some(d) = stack.pop() {
        if let Some(e) = entries.iter().find(|e| e.digest == d) {
            for dep in &e.header.deps {
                if keep.insert(dep.digest) {
                    stack.push(dep.digest);
                }
            }
        }
    }
    for e in &entries {
        if keep.contains(&e.digest) {
            continue;
        }
        if !dry_run {
            store.remove(&e.digest)?;
        }
        report
            .removed
            .push(format!("{} {}", e.header.label(), e.digest));
        report.bytes_freed += e.size;
    }
    Ok(report)
}

/// Remove images from the store, refusing those in use or needed by another stored image
/// unless `force`.
pub fn remove(ctx: &LayerContext, refs: &[LayerRef], force: bool) -> Result<Vec<String>> {
    let store = Store::new(&ctx.store);
    let _lock = store.lock()?;
    let entries = store.list()?;
    let used = layers_in_use(ctx)?;
    let mut targets = Vec::new();
    for r in refs {
        let d = match r {
            LayerRef::Path(_) => {
                bail!("layer rm {r}: name a stored layer by name@version or digest")
            }
            _ => store.resolve(r, Path::new("/"))?,
        };
        match d {
            Some(d) => targets.push(d),
            None => bail!("layer {r} is not in the store {}", store.root.display()),
        }
    }
    if !force {
        for d in &targets {
            if used.contains(d) {
                bail!("layer {d} is used by a container (use --force to remove it anyway)");
            }
            for e in &entries {
                if !targets.contains(&e.digest) && e.header.deps.iter().any(|x| x.digest == *d) {
                    bail!(
                        "layer {d} is needed by {} {} (use --force to remove it anyway)",
                        e.header.label(),
                        e.digest
                    );
                }
            }
        }
    }
    let mut out = Vec::new();
    for d in targets {
        store.remove(&d)?;
        out.push(d.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ann: &[(&str, &str)], readonly: bool) -> Spec {
        let ann: serde_json::Map<String, serde_json::Value> = ann
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        let v = serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs", "readonly": readonly},
            "annotations": ann,
        });
        crate::bundle::parse_config(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn plain_bundle_has_no_layer_spec() {
        assert_eq!(layer_spec(&spec(&[], false)).unwrap(), None);
        assert_eq!(layer_spec(&spec(&[("other", "x")], false)).unwrap(), None);
    }

    #[test]
    fn comma_list_and_json_array_give_the_same_tops() {
        let a = layer_spec(&spec(&[(ANNOTATION_LAYERS, "app@1, lib/x.lrl")], false)).unwrap();
        let b = layer_spec(&spec(
            &[(ANNOTATION_LAYERS, r#"["app@1","lib/x.lrl"]"#)],
            false,
        ))
        .unwrap();
        assert_eq!(a, b);
        let a = a.unwrap();
        assert_eq!(a.upper, UpperMode::State);
        assert_eq!(a.tops[1], LayerRef::Path("lib/x.lrl".into()));
    }

    #[test]
    fn upper_mode_follows_annotation_and_readonly() {
        let tmpfs = layer_spec(&spec(
            &[
                (ANNOTATION_LAYERS, "a@1"),
                (ANNOTATION_UPPER, "tmpfs,size=1m"),
            ],
            false,
        ))
        .unwrap()
        .unwrap();
        assert_eq!(tmpfs.upper, UpperMode::Tmpfs("size=1m".into()));
        let ro = layer_spec(&spec(
            &[(ANNOTATION_LAYERS, "a@1"), (ANNOTATION_UPPER, "tmpfs")],
            true,
        ))
        .unwrap()
        .unwrap();
        assert_eq!(ro.upper, UpperMode::None);
        let bad = layer_spec(&spec(
            &[(ANNOTATION_LAYERS, "a@1"), (ANNOTATION_UPPER, "disk")],
            false,
        ));
        assert!(format!("{:#}", bad.unwrap_err()).contains(ANNOTATION_UPPER));
    }

    #[test]
    fn bad_references_name_the_annotation() {
        for v in ["", " , ", "noversion", "[1,2]"] {
            let e = layer_spec(&spec(&[(ANNOTATION_LAYERS, v)], false)).unwrap_err();
            assert!(format!("{e:#}").contains(ANNOTATION_LAYERS), "{v:?}: {e:#}");
        }
    }

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
