//! Garbage collection on a node: stale references and unused shared mounts (`gc_mounts`, run
//! by `lrun gc`), images no container uses (`gc`, `lrun layer gc`), and `lrun layer rm`.
//!
//! What a container uses is what its record names (`root::RootRecord`, read through
//! `LayerContext::recorded`), whether or not it holds the references yet (a create in
//! progress records before it takes).

use std::collections::HashSet;
use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::LayerContext;
use super::header::Digest;
use super::shared::{self, Shared};
use super::store::{LayerRef, Store};

/// Digests a container's state dir records (empty if it records none, or its record cannot
/// be read).
fn recorded_layers(ctx: &LayerContext, container_dir: &Path) -> HashSet<Digest> {
    (ctx.recorded)(container_dir)
        .map(|r| r.digests())
        .unwrap_or_default()
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
        used.extend(recorded_layers(ctx, &e.path()));
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
/// nobody uses, once the idle policy no longer keeps them (at once with `drop_idle`); the
/// store is left alone (`lrun gc` after crashes). Returns (stale references, unmounted layers).
pub fn gc_mounts(ctx: &LayerContext, drop_idle: bool) -> Result<(usize, usize)> {
    sweep_mounts(ctx, &Shared::new(&ctx.state_root, ctx.idle), drop_idle)
}

fn sweep_mounts(ctx: &LayerContext, shared: &Shared, drop_idle: bool) -> Result<(usize, usize)> {
    let (stale, unmounted, _) = shared.sweep(
        &|d, dir| dir.is_absolute() && recorded_layers(ctx, dir).contains(d),
        drop_idle,
    )?;
    Ok((stale, unmounted))
}

/// `gc`, or with `dry_run` only report which images it would remove.
pub fn gc_with(ctx: &LayerContext, dry_run: bool) -> Result<GcReport> {
    let mut report = GcReport::default();
    let shared = Shared::new(&ctx.state_root, ctx.idle);
    let store = Store::new(&ctx.store);
    let _lock = if store.root.exists() {
        Some(store.lock()?)
    } else {
        None
    };
    if !dry_run {
        // Idle mounts go too: they hold the images this is about to remove.
        let (stale, unmounted) = sweep_mounts(ctx, &shared, true)?;
        report.stale_references = stale;
        report.unmounted = unmounted;
        report.temp_files = store.clean_tmp()? + store.clean_partials()?;
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
    // An idle mount would keep a removed image's space in use.
    Shared::new(&ctx.state_root, ctx.idle).sweep_idle(true)?;
    let mut out = Vec::new();
    for d in targets {
        store.remove(&d)?;
        out.push(d.to_string());
    }
    Ok(out)
}
