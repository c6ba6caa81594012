//! Where layers come from and go to: sources behind one trait, and pull/publish.
//!
//! A source serves layer images by digest and an index from name@version to digest. Two
//! kinds today, both in lrun's own layout (runtime-spec/distribution.md):
//!
//! ```text
//! SOURCE/layers/sha256/<hex>.lrl     the image, hex = layer digest
//! SOURCE/index/<name>/<version>      text: "sha256:<hex>\n"
//! ```
//! - `dir.rs`: a directory (a shared filesystem);
//! - `http.rs`: a plain static HTTP(S) server;
//! - `registry.rs`: an OCI registry (`docker://HOST[:PORT]/REPO`), layers as OCI artifacts;
//!   also the registry side of `lrun image import docker://…` and of publishing.
//!
//! Nothing read from a source is trusted: headers are checked against the digest that named
//! them, and whole images are verified by the store's import before they become visible.
//! `pull.rs` fetches a closure into the node store; `publish.rs` writes a directory source.

pub mod dir;
pub mod http;
pub mod limits;
pub mod publish;
pub mod pull;
pub mod registry;

use std::io::Read;

use anyhow::{Context, Result, bail};

use crate::layers::header::{self, Digest, Header};
pub use limits::{Limits, TransferError, parse_deadline, parse_stall};

/// Where create's `--pull` puts what it fetches, and within what limits.
pub struct PullTarget<'a> {
    /// The runtime's state root (the helper is run with the same `--root`).
    pub root: &'a std::path::Path,
    pub store: &'a std::path::Path,
    pub limits: Limits,
}

/// Fetch the closures of some layer references from a network source into a store: in the
/// helper binary (`crate::helper::pull`), or in this process where the network code is linked
/// (`pull::pull_from`).
pub type RemotePull = fn(&PullTarget, &str, &[crate::layers::LayerRef]) -> Result<()>;

/// An index entry is one line ("sha256:<64 hex>\n"); anything much longer is not one.
const INDEX_MAX: u64 = 4096;

/// A stream of an image's bytes from some offset.
pub struct Body {
    pub reader: Box<dyn Read + Send>,
    /// False when the source ignored the requested offset and sends from byte 0.
    pub from_offset: bool,
}

/// A place layers are pulled from. Every read an implementation makes is bounded (sizes,
/// the stall timeout and the deadline of its `limits::Transfer`).
pub trait LayerSource {
    /// The source as the user named it, for messages.
    fn describe(&self) -> String;

    /// The digest the source's index gives for name@version; None if it has none.
    fn lookup(&self, name: &str, version: &str) -> Result<Option<Digest>>;

    /// `len` bytes of image `d` from `start`, and the image's total size; None if the source
    /// lacks it.
    fn read_range(&self, d: &Digest, start: u64, len: usize) -> Result<Option<(Vec<u8>, u64)>>;

    /// The image's bytes from `offset` on; `total` is the image size its verified header
    /// declares. A source announcing another size is refused before anything is read.
    fn open(&self, d: &Digest, offset: u64, total: u64) -> Result<Body>;

    /// The header of the image with digest `d`, checked against `d`; None if the source
    /// lacks it. Reads the header's bytes only.
    fn header(&self, d: &Digest) -> Result<Option<Header>> {
        let what = || format!("layer {d} from {}", self.describe());
        let Some((first, total)) = self.read_range(d, 0, header::ALIGN as usize)? else {
            return Ok(None);
        };
        let hlen = header_len_hint(&first);
        let bytes = if hlen > first.len() && (hlen as u64) <= total {
            let Some((rest, _)) = self.read_range(d, first.len() as u64, hlen - first.len())?
            else {
                return Ok(None);
            };
            [first, rest].concat()
        } else {
            first
        };
        let (h, got) = Header::decode(&bytes, total).with_context(what)?;
        if got != *d {
            bail!("{}: the file there has digest {got}", what());
        }
        Ok(Some(h))
    }
}

/// `http://…` / `https://…` is a server, anything else a directory. Limits from the
/// environment (`Limits::from_env`).
pub fn parse(s: &str) -> Result<Box<dyn LayerSource>> {
    parse_with(s, Limits::from_env()?)
}

/// As `parse`, with explicit limits; the deadline starts now. A registry gets the default
/// options (credentials from the auth files, the system's CAs).
pub fn parse_with(s: &str, limits: Limits) -> Result<Box<dyn LayerSource>> {
    parse_with_registry(s, limits, &registry::RegistryOptions::default())
}

/// As `parse_with`, with a registry's options (`--creds`, `--cert-dir`, `--tls-verify`).
pub fn parse_with_registry(
    s: &str,
    limits: Limits,
    o: &registry::RegistryOptions,
) -> Result<Box<dyn LayerSource>> {
    let transfer = limits::Transfer::start(limits);
    if s.starts_with(registry::PREFIX) {
        return Ok(Box::new(registry::RegistrySource::new(s, o, transfer)?));
    }
    if !is_network(s) {
        return Ok(Box::new(dir::DirSource::new(s, transfer)?));
    }
    Ok(Box::new(http::HttpSource::new(s, transfer)))
}

/// Whether `s` names a server or registry (whose code the helper binary carries), not a
/// directory.
pub fn is_network(s: &str) -> bool {
    s.starts_with(registry::PREFIX) || s.starts_with("http://") || s.starts_with("https://")
}

/// Where image `d` lives in a source, relative to its root.
fn rel_image(d: &Digest) -> String {
    format!("layers/sha256/{}.{}", d.hex(), header::EXTENSION)
}

/// Where name@version's index entry lives, relative to the root.
fn rel_index(name: &str, version: &str) -> String {
    format!("index/{name}/{version}")
}

/// The digest an index entry names.
fn parse_index_entry(
    src: &dyn LayerSource,
    text: &str,
    name: &str,
    version: &str,
) -> Result<Digest> {
    Digest::parse(text.trim())
        .with_context(|| format!("{}: index entry {name}@{version}", src.describe()))
}

/// Read an index entry: at most INDEX_MAX bytes, else refused.
fn read_bounded(r: impl Read) -> Result<String> {
    let mut buf = Vec::new();
    r.take(INDEX_MAX + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > INDEX_MAX {
        bail!("index entry longer than {INDEX_MAX} bytes");
    }
    String::from_utf8(buf).context("index entry is not text")
}

/// The header length the first bytes declare (0 if they are too short to say).
fn header_len_hint(first: &[u8]) -> usize {
    match first.get(12..16) {
        Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize,
        None => 0,
    }
    // Bounded by the reader's own checks: decode refuses lengths its dependency count does
    // not give, and a length past the file's end is not fetched.
    .min(header::header_len_for(header::MAX_LAYERS) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_entries_are_bounded() {
        let ok = format!("{}\n", Digest::of(b"x"));
        assert_eq!(read_bounded(ok.as_bytes()).unwrap(), ok);
        assert!(read_bounded(std::io::repeat(b'a')).is_err());
    }

    #[test]
    fn header_len_hint_reads_the_declared_length() {
        let mut b = vec![0u8; 16];
        b[12..16].copy_from_slice(&8192u32.to_le_bytes());
        assert_eq!(header_len_hint(&b), 8192);
        assert_eq!(header_len_hint(&b[..10]), 0);
        b[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            header_len_hint(&b),
            header::header_len_for(header::MAX_LAYERS) as usize
        );
    }
}
