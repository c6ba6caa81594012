//! The layer verbs that reach the network: `layer pull` and `layer publish` (`image import`
//! is `cli/image.rs`; create's `--pull` from a server or registry is
//! `distribution::RemotePull`).
//!
//! Their code (HTTP, TLS, the registry client, OCI image conversion) is most of what a
//! runtime binary would otherwise carry and map at every start, so it lives in the helper
//! binary `lrun-fetch` (`crate::helper`): `lrun` parses these verbs like any other and then
//! execs the helper with the same command line; the helper runs them here, in-process.
//! What each binary links is chosen by `cli::NetCode`, so link-time optimisation leaves this
//! module out of `lrun` entirely.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use super::{Globals, RegistryArgs};
use crate::distribution::{self, publish, pull};
use crate::layers::{LayerRef, Store};

#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum NetLayerCommand {
    /// Fetch layers and their dependencies from a directory, an HTTP(S) server or an OCI
    /// registry into the node store: only those missing, each verified
    /// (runtime-spec/distribution.md).
    Pull {
        /// A directory or an http(s):// URL laid out by digest, or docker://HOST[:PORT]/REPO.
        source: String,
        /// NAME@VERSION or sha256:HEX.
        #[arg(required = true)]
        layers: Vec<String>,
        /// Print a JSON summary (for schedulers) instead of one line per layer.
        #[arg(long)]
        json: bool,
        /// Give up a transfer that gets less than 1 KiB in this many seconds (default 30,
        /// env LRUN_PULL_STALL_TIMEOUT, node config pull.stall_timeout).
        #[arg(long, value_name = "SECS")]
        stall_timeout: Option<String>,
        /// Give up the whole pull after this many seconds (default 3600, 0 for none, env
        /// LRUN_PULL_DEADLINE, node config pull.deadline).
        #[arg(long, value_name = "SECS")]
        deadline: Option<String>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Copy layer images into a directory laid out for `pull` (any static web server can
    /// serve that directory), or push them to an OCI registry as artifacts.
    Publish {
        /// The target directory, or docker://HOST[:PORT]/REPO.
        target: String,
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
}

/// Run `layer pull` or `layer publish` in this process.
pub fn run(g: &Globals, c: NetLayerCommand) -> Result<i32> {
    match c {
        NetLayerCommand::Pull {
            source,
            layers: refs,
            json,
            stall_timeout,
            deadline,
            registry,
        } => {
            let refs = refs
                .iter()
                .map(|r| LayerRef::parse(r))
                .collect::<Result<Vec<_>>>()?;
            let mut limits = g.pull_limits;
            if let Some(v) = stall_timeout {
                limits.stall = distribution::parse_stall(&v).context("--stall-timeout")?;
            }
            if let Some(v) = deadline {
                limits.deadline = distribution::parse_deadline(&v).context("--deadline")?;
            }
            let src = distribution::parse_with_registry(&source, limits, &registry.options())?;
            let r = pull::pull(
                &Store::new(&g.store),
                &*src,
                &refs,
                &pull::PullOptions::default(),
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_pull(&r);
            }
        }
        NetLayerCommand::Publish {
            target,
            files,
            registry,
        } => {
            if target.starts_with(distribution::registry::PREFIX) {
                let out = distribution::registry::publish(
                    &target,
                    &registry.options(),
                    g.pull_limits,
                    &files,
                )?;
                for (label, d, new) in out {
                    println!(
                        "{label} {d} {}",
                        if new { "published" } else { "already there" }
                    );
                }
                return Ok(0);
            }
            if target.starts_with("http://") || target.starts_with("https://") {
                bail!(
                    "publish {target}: lrun writes only to a directory; copy that directory to the server (layout: runtime-spec/distribution.md)"
                );
            }
            for (label, d, new) in publish::publish_dir(Path::new(&target), &files)? {
                println!(
                    "{label} {d} {}",
                    if new { "published" } else { "already there" }
                );
            }
        }
    }
    Ok(0)
}

/// One line per layer of a pull, then a summary.
pub fn print_pull(r: &pull::PullReport) {
    for l in &r.fetched {
        println!(
            "fetched {}@{} {} {} in {:.2} s",
            l.name,
            l.version,
            l.digest,
            pull::human(l.bytes),
            l.seconds
        );
    }
    for l in &r.present {
        println!("present {}@{} {}", l.name, l.version, l.digest);
    }
    println!(
        "{} layer(s) fetched ({}), {} already present, {:.2} s",
        r.fetched.len(),
        pull::human(r.bytes_fetched),
        r.present.len(),
        r.seconds
    );
}
