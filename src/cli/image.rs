//! `lrun image import`: OCI image layouts to layer images and a layered bundle.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use super::{Globals, RegistryArgs};
use crate::distribution::registry;
use crate::image::oci;
use crate::layers::{FsType, Store, pack};

#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum ImageCommand {
    /// Turn an OCI image layout (skopeo copy … oci:DIR, podman save --format oci-dir) or an
    /// image in a registry into layer images in the store, and optionally a bundle that
    /// runs it.
    Import {
        /// OCI_LAYOUT_DIR[:TAG] or docker://HOST[:PORT]/REPO[:TAG|@sha256:HEX].
        layout: String,
        /// Name of the top layer (the image).
        #[arg(long)]
        name: String,
        /// Version of the top layer.
        #[arg(long)]
        version: String,
        /// Write a layered bundle (config.json from the image config) to this directory.
        #[arg(short = 'o', long = "output")]
        out: Option<PathBuf>,
        /// Filesystem of the layer images.
        #[arg(long, default_value = pack::DEFAULT_FS.name())]
        fs: String,
        /// Compression (as for `lrun layer pack`).
        #[arg(long)]
        compression: Option<String>,
        /// The platform to take from an image index [default: linux/<this machine>].
        #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
        platform: Option<String>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
}

/// `DIR` if it is a directory, else `DIR:TAG` split at the last ':'.
fn split_layout(s: &str) -> (PathBuf, Option<String>) {
    if Path::new(s).is_dir() {
        return (PathBuf::from(s), None);
    }
    match s.rsplit_once(':') {
        Some((d, t)) if !t.contains('/') => (PathBuf::from(d), Some(t.to_string())),
        _ => (PathBuf::from(s), None),
    }
}

pub fn run(g: &Globals, c: ImageCommand) -> Result<i32> {
    match c {
        ImageCommand::Import {
            layout,
            name,
            version,
            out,
            fs,
            compression,
            platform,
            registry: reg,
        } => {
            let platform = match &platform {
                Some(p) => oci::Platform::parse(p)?,
                None => oci::Platform::host(),
            };
            let (dir, tag) = split_layout(&layout);
            let source: Box<dyn oci::ImageSource + '_> = if layout.starts_with(registry::PREFIX) {
                Box::new(registry::RegistryImage::new(
                    &layout,
                    &reg.options(),
                    g.pull_limits,
                    platform,
                )?)
            } else {
                if !dir.is_dir() {
                    bail!("{}: not an OCI image layout directory", dir.display());
                }
                Box::new(oci::LayoutSource {
                    layout: &dir,
                    tag: tag.as_deref(),
                    platform,
                })
            };
            if let Some(o) = &out
                && o.join("config.json").exists()
            {
                bail!(
                    "{} exists already: remove it first",
                    o.join("config.json").display()
                );
            }
            let store = Store::new(&g.store);
            let imp = oci::import(&oci::ImportOptions {
                source: &*source,
                name: &name,
                version: &version,
                store: &store,
                fs: FsType::parse(&fs)?,
                compression: compression.as_deref(),
            })?;
            for (label, d, reused) in &imp.layers {
                println!(
                    "{label} {d} {}",
                    if *reused { "reused" } else { "converted" }
                );
            }
            if let Some(o) = out {
                std::fs::create_dir_all(&o).with_context(|| format!("create {}", o.display()))?;
                let top = format!("{name}@{version}");
                let spec = oci::bundle_config(
                    crate::config_template::default_config(),
                    &top,
                    &imp.process,
                );
                let p = o.join("config.json");
                let text = serde_json::to_string_pretty(&spec)? + "\n";
                crate::utils::write_atomic(&p, text.as_bytes(), 0o644)?;
                println!("bundle {}", o.display());
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn layout_and_tag_split_at_the_last_colon() {
        let (d, t) = super::split_layout("/nonexistent/img:latest");
        assert_eq!(d, std::path::Path::new("/nonexistent/img"));
        assert_eq!(t.as_deref(), Some("latest"));
        let (_, t) = super::split_layout("/nonexistent/img");
        assert_eq!(t, None);
    }
}
