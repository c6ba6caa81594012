//! `lrun layer ...`: pack, inspect, verify, add, ls, rm, gc (pull and publish: `net.rs`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::json;

use super::Globals;
use crate::layers::header::{self, Dep};
use crate::layers::{self, FsType, LayerContext, LayerRef, Store, pack, store};

#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum LayerCommand {
    /// Build a layer image (.lrl) from a directory, reproducibly.
    Pack {
        /// The directory that becomes the layer's root.
        dir: PathBuf,
        /// Layer name.
        #[arg(long)]
        name: String,
        /// Layer version, e.g. a commit id.
        #[arg(long)]
        version: String,
        /// A layer this one stacks on: an image file, or NAME@VERSION / sha256:HEX in the store.
        #[arg(long = "dep")]
        deps: Vec<String>,
        /// Filesystem of the payload.
        #[arg(long, default_value = pack::DEFAULT_FS.name())]
        fs: String,
        /// Compression: erofs none|lz4|lz4hc[,LEVEL] (default none); squashfs
        /// none|gzip|lzo|lz4|xz|zstd[,LEVEL] (default zstd,3).
        #[arg(long)]
        compression: Option<String>,
        /// Keep file owners (default: everything owned by 0:0).
        #[arg(long)]
        keep_owners: bool,
        /// Output file.
        #[arg(short = 'o', long = "output")]
        out: PathBuf,
    },
    /// Print a layer image's header.
    Inspect {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Check a layer image completely: header checksum, payload digest, filesystem magic.
    /// Without FILE, check every image in the node store, and that each is a read-only file
    /// the store owns; one line per problem, exit status 1 if any.
    Verify { file: Option<PathBuf> },
    /// Import layer images into the node store (verified once, here).
    Add {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List the layers in the node store.
    #[command(alias = "list")]
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove layers from the node store.
    Rm {
        /// NAME@VERSION or sha256:HEX.
        #[arg(required = true)]
        layers: Vec<String>,
        /// Remove even if a container uses it or another layer depends on it.
        #[arg(long)]
        force: bool,
    },
    /// Release stale references and unused mounts, and remove unused layers from the store.
    Gc {
        /// Only print what would be removed.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(g: &Globals, c: LayerCommand) -> Result<i32> {
    let ctx = LayerContext {
        store: g.store.clone(),
        state_root: g.root.clone(),
        recorded: crate::state::recorded_root,
        idle: g.idle_layers,
    };
    match c {
        LayerCommand::Pack {
            dir,
            name,
            version,
            deps,
            fs,
            compression,
            keep_owners,
            out,
        } => {
            let fs = FsType::parse(&fs)?;
            let deps = deps
                .iter()
                .map(|d| resolve_dep(&ctx, d))
                .collect::<Result<Vec<_>>>()?;
            let (h, d) = pack::pack(&pack::PackOptions {
                dir: &dir,
                name: &name,
                version: &version,
                deps,
                fs,
                compression: compression.as_deref(),
                keep_owners,
                out: &out,
            })?;
            println!("{} {d} {}", h.label(), out.display());
        }
        LayerCommand::Inspect { file, json } => {
            let (h, d) = header::read_header(&file)?;
            print_header(&h, &d, json);
        }
        LayerCommand::Verify { file: Some(file) } => {
            let (h, d) =
                store::verify(&file).with_context(|| format!("layer image {}", file.display()))?;
            println!("{} {d}: ok", h.label());
        }
        LayerCommand::Verify { file: None } => {
            let (intact, problems) = Store::new(&ctx.store).verify_all()?;
            for p in &problems {
                eprintln!("lrun: layer verify: {p}");
            }
            println!(
                "{intact} image(s) checked in {}, {} problem(s)",
                ctx.store.display(),
                problems.len()
            );
            if !problems.is_empty() {
                return Ok(1);
            }
        }
        LayerCommand::Add { files } => {
            let s = Store::new(&ctx.store);
            for f in files {
                let (d, h, new) = s.add(&f)?;
                println!(
                    "{} {d} {}",
                    h.label(),
                    if new { "added" } else { "already present" }
                );
            }
        }
        LayerCommand::Ls { json } => {
            let s = Store::new(&ctx.store);
            let used = layers::layers_in_use(&ctx)?;
            let (entries, damaged) = s.scan()?;
            if json {
                let mut v: Vec<_> = entries
                    .iter()
                    .map(|e| {
                        json!({
                            "name": e.header.name, "version": e.header.version,
                            "digest": e.digest.to_string(), "fs": e.header.fs.name(),
                            "size": e.size, "dependencies": e.header.deps.len(),
                            "inUse": used.contains(&e.digest),
                        })
                    })
                    .collect();
                v.extend(damaged.iter().map(|b| {
                    json!({
                        "digest": b.digest.map(|d| d.to_string()), "path": b.path,
                        "size": b.size, "damaged": b.problem,
                        "inUse": b.digest.is_some_and(|d| used.contains(&d)),
                    })
                }));
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{:<32} {:<20} {:<19} {:<8} {:>10} {:>4} IN-USE",
                    "NAME", "VERSION", "DIGEST", "FS", "SIZE", "DEPS"
                );
                for e in entries {
                    println!(
                        "{:<32} {:<20} {:<19} {:<8} {:>10} {:>4} {}",
                        e.header.name,
                        e.header.version,
                        &e.digest.to_string()[..19],
                        e.header.fs.name(),
                        e.size,
                        e.header.deps.len(),
                        if used.contains(&e.digest) {
                            "yes"
                        } else {
                            "no"
                        }
                    );
                }
                // Damaged files: listed, never fatal (`verify` details, `rm --force`/`gc` remove).
                for b in damaged {
                    let digest = b.digest.map(|d| d.to_string()).unwrap_or_default();
                    println!(
                        "{:<32} {:<20} {:<19} {:<8} {:>10} {:>4} DAMAGED: {}",
                        "?",
                        "?",
                        digest.get(..19).unwrap_or("?"),
                        "?",
                        b.size,
                        "?",
                        b.problem
                    );
                }
            }
        }
        LayerCommand::Rm {
            layers: refs,
            force,
        } => {
            let refs = refs
                .iter()
                .map(|r| LayerRef::parse(r))
                .collect::<Result<Vec<_>>>()?;
            for d in layers::remove(&ctx, &refs, force)? {
                println!("removed {d}");
            }
        }
        LayerCommand::Gc { dry_run, json } => {
            let r = layers::gc_with(&ctx, dry_run)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                let (verb, pp) = if dry_run {
                    ("would remove", "would be removed")
                } else {
                    ("removed", "removed")
                };
                for l in &r.removed {
                    println!("{verb} {l}");
                }
                println!(
                    "{} stale reference(s), {} mount(s) released, {} image(s) {pp} ({} bytes), {} temp file(s)",
                    r.stale_references,
                    r.unmounted,
                    r.removed.len(),
                    r.bytes_freed,
                    r.temp_files
                );
            }
        }
    }
    Ok(0)
}

/// A dependency from a file (its header) or from the store (NAME@VERSION or digest).
fn resolve_dep(ctx: &LayerContext, s: &str) -> Result<Dep> {
    let r = LayerRef::parse(s).with_context(|| format!("--dep {s}"))?;
    let (h, d) = match r {
        LayerRef::Path(p) => header::read_header(&p)?,
        _ => {
            let st = Store::new(&ctx.store);
            let Some(d) = st.resolve(&r, Path::new("/"))? else {
                bail!("--dep {s}: not in the store {}", ctx.store.display());
            };
            let Some(h) = st.header(&d)? else {
                bail!("--dep {s}: not in the store {}", ctx.store.display());
            };
            (h, d)
        }
    };
    Ok(Dep {
        name: h.name,
        version: h.version,
        digest: d,
    })
}

fn print_header(h: &layers::Header, d: &layers::Digest, json: bool) {
    if json {
        let deps: Vec<_> = h
            .deps
            .iter()
            .map(|x| json!({"name": x.name, "version": x.version, "digest": x.digest.to_string()}))
            .collect();
        let v = json!({
            "name": h.name, "version": h.version, "digest": d.to_string(),
            "fs": h.fs.name(), "formatVersion": header::FORMAT_VERSION,
            "payloadOffset": h.payload_offset, "payloadLength": h.payload_len,
            "payloadDigest": h.payload_digest.to_string(), "dependencies": deps,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return;
    }
    println!("name:           {}", h.name);
    println!("version:        {}", h.version);
    println!("digest:         {d}");
    println!("fs:             {}", h.fs.name());
    println!("payload offset: {}", h.payload_offset);
    println!("payload length: {}", h.payload_len);
    println!("payload digest: {}", h.payload_digest);
    if h.deps.is_empty() {
        println!("dependencies:   none");
    } else {
        println!("dependencies:");
        for x in &h.deps {
            println!("  {}@{} {}", x.name, x.version, x.digest);
        }
    }
}
