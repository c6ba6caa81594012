//! Importing an OCI image layout (`skopeo copy … oci:DIR`, `podman save --format oci-dir`) as
//! a stack of layer images plus a layered bundle.
//!
//! Each tar layer is extracted as root into a private temporary directory, OCI whiteouts
//! become overlayfs ones (`.wh.NAME` → a 0:0 character device, `.wh..wh..opq` → the
//! `trusted.overlay.opaque=y` xattr), owners, modes, xattrs, links and device nodes are kept,
//! and the tree is packed with owners kept. Layer *k* depends on layer *k-1*. Every blob is
//! checked against its descriptor's digest while it is read.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use oci_spec::image::{
    Config, Descriptor, DigestAlgorithm, ImageConfiguration, ImageIndex, ImageManifest, MediaType,
    OciLayout,
};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::layers::header::{Dep, Digest, FsType};
use crate::layers::pack;
use crate::layers::store::Store;

/// Name of the lower layers an import makes; their version is the OCI chain id, so the same
/// base layers imported with two images are the same lrun layers.
pub const LOWER_NAME: &str = "oci-layer";

/// Where an image's manifest, config and layer blobs come from: an OCI layout on disk
/// (`LayoutSource`) or a registry (`distribution::registry`, kept there so the HTTP and TLS
/// code stays out of this module).
pub trait ImageSource {
    /// The image's manifest (an index already followed to the platform's manifest) and
    /// config, each checked against the digest that named it, parsed by `parse_image`.
    fn image(&self) -> Result<(ImageManifest, ImageConfiguration)>;

    /// A local file with the layer blob `desc` names. Not trusted: the import checks its
    /// digest while extracting it.
    fn layer(&self, desc: &Descriptor) -> Result<LayerFile>;
}

/// A layer blob on disk; a temporary download is removed with it.
pub struct LayerFile {
    pub path: PathBuf,
    pub temp: Option<TempDir>,
}

/// An OCI image layout directory.
pub struct LayoutSource<'a> {
    pub layout: &'a Path,
    /// `org.opencontainers.image.ref.name` to pick from index.json (needed when it lists
    /// several images).
    pub tag: Option<&'a str>,
    pub platform: Platform,
}

impl ImageSource for LayoutSource<'_> {
    fn image(&self) -> Result<(ImageManifest, ImageConfiguration)> {
        let layout_file = self.layout.join("oci-layout");
        let lv: Value = read_json(&layout_file)?;
        if serde_json::from_value::<OciLayout>(lv).is_err() {
            bail!("{}: no imageLayoutVersion", layout_file.display());
        }
        read_image(self.layout, self.tag, &self.platform)
    }

    fn layer(&self, desc: &Descriptor) -> Result<LayerFile> {
        Ok(LayerFile {
            path: blob_path(self.layout, desc)?.0,
            temp: None,
        })
    }
}

/// An image index entry's platform: `os/architecture[/variant]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl Platform {
    /// linux/<this machine's architecture, in OCI's spelling>.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            a => a,
        };
        Platform {
            os: "linux".into(),
            arch: arch.into(),
            variant: None,
        }
    }

    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            bail!("--platform {s:?}: expected OS/ARCH or OS/ARCH/VARIANT, e.g. linux/amd64");
        }
        Ok(Platform {
            os: parts[0].into(),
            arch: parts[1].into(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

pub struct ImportOptions<'a> {
    pub source: &'a dyn ImageSource,
    pub name: &'a str,
    pub version: &'a str,
    pub store: &'a Store,
    pub fs: FsType,
    pub compression: Option<&'a str>,
}

/// What an import produced.
#[derive(Debug)]
pub struct Imported {
    /// (label, digest, reused: already in the store, not fetched or converted), bottom-most
    /// first; the last one is NAME@VERSION.
    pub layers: Vec<(String, Digest, bool)>,
    /// The image config's process: the bundle config.json fields it sets.
    pub process: ProcessConfig,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessConfig {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
}

/// Import the image: every layer into the store. Returns the layers and process settings.
pub fn import(o: &ImportOptions<'_>) -> Result<Imported> {
    let (manifest, config) = o.source.image()?;
    let process_fields = config.config().clone().unwrap_or_default();
    let layers = manifest.layers();
    if layers.is_empty() {
        bail!("image manifest: no layers");
    }
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != layers.len() {
        bail!(
            "image config: {} diff_ids for {} layers",
            diff_ids.len(),
            layers.len()
        );
    }
    // Chain ids from the config's diff_ids (the config is checked against its digest): a
    // lower layer whose chain id the store already has was converted by an earlier import,
    // from content checked against these same diff_ids, and is neither fetched nor converted
    // again. Each converted layer's own diff_id is checked against the config below.
    let mut chains = Vec::with_capacity(layers.len());
    for id in diff_ids {
        let prev: Option<&String> = chains.last();
        chains.push(match prev {
            None => id.clone(),
            Some(c) => format!(
                "sha256:{}",
                Digest::of(format!("{c} {id}").as_bytes()).hex()
            ),
        });
    }

    let mut out = Vec::new();
    let mut dep: Option<Dep> = None;
    // Per layer: its /etc/passwd and /etc/group, or None for a layer reused unextracted.
    let mut users: Vec<Option<(Option<String>, Option<String>)>> = Vec::new();
    for (i, desc) in layers.iter().enumerate() {
        let last = i + 1 == layers.len();
        let chain_hex = chains[i]
            .strip_prefix("sha256:")
            .unwrap_or_default()
            .to_string();
        if !last
            && let Some(d) = o.store.lookup_label(LOWER_NAME, &chain_hex)?
            && let Some(h) = o.store.header(&d).ok().flatten()
        {
            dep = Some(Dep {
                name: h.name.clone(),
                version: h.version.clone(),
                digest: d,
            });
            out.push((h.label(), d, true));
            users.push(None);
            continue;
        }
        let tmp = TempDir::new(&format!("import-{i}"))?;
        let tree = tmp.0.join("tree");
        fs::create_dir(&tree).with_context(|| format!("create {}", tree.display()))?;
        let blob = o.source.layer(desc)?;
        let diff_id = extract_layer(&blob.path, desc, &tree)
            .with_context(|| format!("image layer {} ({})", i + 1, desc_digest(desc)))?;
        drop(blob);
        if diff_ids[i] != diff_id {
            bail!(
                "image layer {}: uncompressed digest {diff_id}, the config says {}",
                i + 1,
                diff_ids[i]
            );
        }
        users.push(Some((
            fs::read_to_string(tree.join("etc/passwd")).ok(),
            fs::read_to_string(tree.join("etc/group")).ok(),
        )));
        let (name, version) = if last {
            (o.name.to_string(), o.version.to_string())
        } else {
            (LOWER_NAME.to_string(), chain_hex)
        };
        let file = tmp.0.join("layer.lrl");
        let (h, d) = pack::pack(&pack::PackOptions {
            dir: &tree,
            name: &name,
            version: &version,
            deps: dep.take().into_iter().collect(),
            fs: o.fs,
            compression: o.compression,
            keep_owners: true,
            out: &file,
        })?;
        o.store.add(&file)?;
        dep = Some(Dep {
            name: h.name.clone(),
            version: h.version.clone(),
            digest: d,
        });
        out.push((h.label(), d, false));
    }
    // Names for the user: the topmost /etc/passwd and /etc/group win. A reused layer is read
    // for them only when the image's User names a user or group.
    let user = process_fields.user().clone().unwrap_or_default();
    let needs_names = user
        .split(':')
        .any(|p| !p.is_empty() && p.parse::<u32>().is_err());
    let (mut passwd, mut group) = (None, None);
    for (i, u) in users.iter().enumerate().rev() {
        if passwd.is_some() && group.is_some() {
            break;
        }
        let (p, g) = match u {
            Some(pg) => pg.clone(),
            None if needs_names => {
                let blob = o.source.layer(&layers[i])?;
                user_files(&blob.path, &layers[i]).with_context(|| {
                    format!("image layer {} ({})", i + 1, desc_digest(&layers[i]))
                })?
            }
            None => continue,
        };
        passwd = passwd.or(p);
        group = group.or(g);
    }
    let process = process_config(&process_fields, passwd.as_deref(), group.as_deref())?;
    Ok(Imported {
        layers: out,
        process,
    })
}

/// A config.json for the imported image: `lrun spec` defaults, no terminal, the image's
/// process, and the layer annotation naming NAME@VERSION.
pub fn bundle_config(mut spec: Value, top: &str, p: &ProcessConfig) -> Value {
    spec["process"]["terminal"] = json!(false);
    spec["process"]["args"] = json!(p.args);
    if !p.env.is_empty() {
        spec["process"]["env"] = json!(p.env);
    }
    spec["process"]["cwd"] = json!(p.cwd);
    spec["process"]["user"] = json!({"uid": p.uid, "gid": p.gid});
    spec["root"] = json!({"path": "rootfs", "readonly": false});
    spec["annotations"] = json!({ crate::layers::ANNOTATION_LAYERS: top });
    spec
}

/// The image config fields that become config.json's process, checked as untrusted input:
/// WorkingDir a clean absolute path (CVE-2024-21626 used `/proc/self/fd/N`), Env entries
/// KEY=VALUE, User of a form `resolve_user` can read. Errors name the field, in one line.
fn check_process_fields(c: &Value) -> Result<()> {
    match &c["WorkingDir"] {
        Value::Null => {}
        Value::String(w) if w.is_empty() => {}
        Value::String(w) => check_working_dir(w)?,
        v => bail!("image config: WorkingDir {v} is not a string"),
    }
    match &c["Env"] {
        Value::Null => {}
        Value::Array(a) => {
            for v in a {
                let e = v.as_str().unwrap_or_default();
                let key = e.split_once('=').map(|(k, _)| k).unwrap_or_default();
                if key.is_empty() || e.contains('\0') {
                    bail!("image config: Env entry {v} is not KEY=VALUE");
                }
            }
        }
        v => bail!("image config: Env {v} is not a list"),
    }
    match &c["User"] {
        Value::Null => {}
        Value::String(u) => check_user(u)?,
        v => bail!("image config: User {v} is not a string"),
    }
    for field in ["Entrypoint", "Cmd"] {
        match &c[field] {
            Value::Null => {}
            Value::Array(a)
                if a.iter()
                    .all(|v| v.as_str().is_some_and(|s| !s.contains('\0'))) => {}
            v => bail!("image config: {field} {v} is not a list of strings"),
        }
    }
    Ok(())
}

/// A clean absolute path ("/" or "/a/b": no empty, "." or ".." components, no NUL), and not
/// in /proc, which the runtime mounts and where a directory can lead to the host's files.
fn check_working_dir(w: &str) -> Result<()> {
    let rest = w.strip_prefix('/');
    let clean = rest.is_some_and(|r| {
        r.is_empty()
            || r.split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'))
    });
    if !clean {
        bail!("image config: WorkingDir {w:?} is not a clean absolute path");
    }
    if rest.is_some_and(|r| r == "proc" || r.starts_with("proc/")) {
        bail!("image config: WorkingDir {w:?} is inside /proc");
    }
    Ok(())
}

/// `user`, `user:group`, names or ids, each part non-empty.
fn check_user(u: &str) -> Result<()> {
    if u.is_empty() {
        return Ok(());
    }
    let ok_part = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-$".contains(c))
    };
    let ok = match u.split_once(':') {
        Some((name, group)) => ok_part(name) && ok_part(group),
        None => ok_part(u),
    };
    if !ok {
        bail!("image config: User {u:?} is not user, uid, user:group or uid:gid");
    }
    Ok(())
}

fn process_config(c: &Config, passwd: Option<&str>, group: Option<&str>) -> Result<ProcessConfig> {
    let mut args = c.entrypoint().clone().unwrap_or_default();
    args.extend(c.cmd().clone().unwrap_or_default());
    if args.is_empty() {
        bail!("image config: neither Entrypoint nor Cmd: the bundle would have nothing to run");
    }
    let cwd = match c.working_dir().as_deref() {
        Some(w) if !w.is_empty() => w.to_string(),
        _ => "/".to_string(),
    };
    let (uid, gid) = resolve_user(c.user().as_deref().unwrap_or(""), passwd, group)?;
    Ok(ProcessConfig {
        args,
        env: c.env().clone().unwrap_or_default(),
        cwd,
        uid,
        gid,
    })
}

/// OCI `User`: `uid`, `uid:gid`, `name`, `name:group` (names from the image's files).
fn resolve_user(user: &str, passwd: Option<&str>, group: Option<&str>) -> Result<(u32, u32)> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let find = |table: Option<&str>, key: &str, by_id: bool| -> Option<(u32, Option<u32>)> {
        table?.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let id: u32 = f.get(2)?.parse().ok()?;
            let hit = if by_id {
                key.parse::<u32>().ok() == Some(id)
            } else {
                f.first() == Some(&key)
            };
            hit.then(|| (id, f.get(3).and_then(|g| g.parse().ok())))
        })
    };
    let (uid, primary) = match u.parse::<u32>() {
        Ok(n) => (n, find(passwd, u, true).and_then(|(_, g)| g)),
        Err(_) => match find(passwd, u, false) {
            Some((id, g)) => (id, g),
            None => bail!("image config: user {u:?} is not in the image's /etc/passwd"),
        },
    };
    let gid = match g {
        None => primary.unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => match find(group, g, false) {
                Some((id, _)) => id,
                None => bail!("image config: group {g:?} is not in the image's /etc/group"),
            },
        },
    };
    Ok((uid, gid))
}

fn read_json(p: &Path) -> Result<Value> {
    let t = fs::read(p).with_context(|| format!("read {}", p.display()))?;
    serde_json::from_slice(&t).with_context(|| format!("parse {}", p.display()))
}

/// index.json (and a nested index) to the manifest, then its config, checked.
fn read_image(
    layout: &Path,
    tag: Option<&str>,
    platform: &Platform,
) -> Result<(ImageManifest, ImageConfiguration)> {
    let index_file = layout.join("index.json");
    let index = read_json(&index_file)?;
    if !index["manifests"].is_array() {
        bail!("index.json: no manifests");
    }
    let index: ImageIndex =
        serde_json::from_value(index).with_context(|| format!("parse {}", index_file.display()))?;
    let manifest_desc = pick_manifest(layout, &index, tag, platform)?;
    let manifest = read_blob(layout, &manifest_desc)?;
    let config_desc = manifest_config(&manifest)?;
    parse_image(&manifest, &read_blob(layout, &config_desc)?)
}

/// The config descriptor of a manifest's bytes (to fetch the config before `parse_image`).
pub fn manifest_config(manifest: &[u8]) -> Result<Descriptor> {
    let m: Value = serde_json::from_slice(manifest).context("parse the image manifest")?;
    serde_json::from_value(m["config"].clone()).context("image manifest: config")
}

/// A manifest and its config, both already checked against their digests, parsed: the
/// config's process fields (`check_process_fields`) before anything is imported, so a
/// refused image leaves nothing behind.
pub fn parse_image(manifest: &[u8], config: &[u8]) -> Result<(ImageManifest, ImageConfiguration)> {
    let manifest: Value = serde_json::from_slice(manifest).context("parse the image manifest")?;
    if !manifest["layers"].is_array() {
        bail!("image manifest: no layers");
    }
    let manifest: ImageManifest =
        serde_json::from_value(manifest).context("parse the image manifest")?;
    let config: Value = serde_json::from_slice(config).context("parse the image config")?;
    // The untrusted fields first, each refusal naming its field in one line; then the rest.
    check_process_fields(&config["config"])?;
    let config: ImageConfiguration =
        serde_json::from_value(config).context("parse the image config")?;
    Ok((manifest, config))
}

/// Whether a manifest's media type (or, without one, its shape) is an image index.
pub fn is_index(media_type: Option<&str>, body: &Value) -> bool {
    match media_type {
        Some(m) => {
            m == "application/vnd.oci.image.index.v1+json"
                || m == "application/vnd.docker.distribution.manifest.list.v2+json"
        }
        None => body["manifests"].is_array(),
    }
}

/// The descriptor of `platform`'s manifest in an image index.
pub fn choose_platform(index: &[u8], platform: &Platform) -> Result<Descriptor> {
    let inner: Value = serde_json::from_slice(index).context("parse the image index")?;
    if !inner["manifests"].is_array() {
        bail!("image index: no manifests");
    }
    let inner: ImageIndex = serde_json::from_value(inner).context("parse the image index")?;
    let found = inner.manifests().iter().find(|x| {
        x.platform().as_ref().is_some_and(|p| {
            p.architecture().to_string() == platform.arch
                && p.os().to_string() == platform.os
                && (platform.variant.is_none() || *p.variant() == platform.variant)
        })
    });
    match found {
        Some(x) => Ok(x.clone()),
        None => bail!("image index has no {platform} image (--platform chooses another)"),
    }
}

fn desc_digest(d: &Descriptor) -> String {
    d.digest().to_string()
}

/// `blobs/<alg>/<hex>` of a descriptor; only sha256, with a hex that cannot leave blobs/.
fn blob_path(layout: &Path, desc: &Descriptor) -> Result<(PathBuf, Digest)> {
    let d = desc_sha256(desc)?;
    Ok((layout.join("blobs/sha256").join(d.hex()), d))
}

/// A descriptor's digest: only sha256, as 64 hex digits (so it cannot leave blobs/ either).
pub fn desc_sha256(desc: &Descriptor) -> Result<Digest> {
    let dg = desc_digest(desc);
    if *desc.digest().algorithm() != DigestAlgorithm::Sha256 {
        bail!("descriptor digest {dg:?}: only sha256 is supported");
    }
    Digest::parse(desc.digest().digest()).with_context(|| format!("descriptor digest {dg:?}"))
}

/// How a layer blob is compressed, told by its first bytes (its media type is only a claim,
/// and the blob's digest is checked either way).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    fn sniff(f: &File) -> Result<Compression> {
        let mut magic = [0u8; 4];
        let n = f.read_at(&mut magic, 0).context("read layer blob")?;
        Ok(if n >= 2 && magic[..2] == [0x1f, 0x8b] {
            Compression::Gzip
        } else if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
            Compression::Zstd
        } else {
            Compression::None
        })
    }

    fn decoder<'a, R: std::io::BufRead + 'a>(self, r: R) -> Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(r),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
            Compression::Zstd => Box::new(ZstdFrames {
                src: Some(r),
                dec: None,
            }),
        })
    }
}

/// A zstd stream of one or more frames (a concatenation is one valid stream), decoded with
/// ruzstd. Its default window limit bounds the memory a hostile frame header can ask for.
struct ZstdFrames<R: std::io::BufRead> {
    src: Option<R>,
    dec: Option<ruzstd::decoding::StreamingDecoder<R, ruzstd::decoding::FrameDecoder>>,
}

impl<R: std::io::BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(d) = &mut self.dec {
                let n = d.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                // This frame is done: another may follow.
                let Some(d) = self.dec.take() else {
                    return Ok(0);
                };
                self.src = Some(d.into_inner());
            }
            let Some(mut src) = self.src.take() else {
                return Ok(0);
            };
            if src.fill_buf()?.is_empty() {
                return Ok(0);
            }
            let d = ruzstd::decoding::StreamingDecoder::new(src)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            self.dec = Some(d);
        }
    }
}

/// /etc/passwd and /etc/group from a layer blob's tar, without extracting it (for a layer
/// reused from the store when the image's User names a user). The blob's digest is checked.
fn user_files(p: &Path, desc: &Descriptor) -> Result<(Option<String>, Option<String>)> {
    const MAX: u64 = 1 << 20;
    let want = desc_sha256(desc)?;
    let f = File::open(p).with_context(|| format!("open {}", p.display()))?;
    let kind = Compression::sniff(&f)?;
    let mut h = Sha256::new();
    let (mut passwd, mut group) = (None, None);
    {
        let comp = std::io::BufReader::with_capacity(
            1 << 20,
            HashRead {
                inner: f,
                h: &mut h,
            },
        );
        let mut ar = tar::Archive::new(kind.decoder(comp)?);
        for e in ar.entries().context("read tar")? {
            let mut e = e.context("read tar entry")?;
            let rel = clean_rel(&e.path().context("tar entry path")?)?;
            let slot = if rel == Path::new("etc/passwd") {
                &mut passwd
            } else if rel == Path::new("etc/group") {
                &mut group
            } else {
                continue;
            };
            let mut t = String::new();
            (&mut e)
                .take(MAX)
                .read_to_string(&mut t)
                .context("read tar entry")?;
            *slot = Some(t);
        }
        let mut rest = ar.into_inner();
        std::io::copy(&mut rest, &mut std::io::sink()).context("read layer blob")?;
    }
    if Digest(h.finalize().into()) != want {
        bail!("{}: content does not match its digest", p.display());
    }
    Ok((passwd, group))
}

fn read_blob(layout: &Path, desc: &Descriptor) -> Result<Vec<u8>> {
    let (p, d) = blob_path(layout, desc)?;
    let data = fs::read(&p).with_context(|| format!("read {}", p.display()))?;
    if Digest::of(&data) != d {
        bail!("{}: content does not match its digest", p.display());
    }
    Ok(data)
}

/// The manifest descriptor: by tag, or the only one; an image index is followed to the
/// manifest for this machine's architecture.
fn pick_manifest(
    layout: &Path,
    index: &ImageIndex,
    tag: Option<&str>,
    platform: &Platform,
) -> Result<Descriptor> {
    let ms = index.manifests();
    let tag_of = |m: &Descriptor| {
        m.annotations()
            .as_ref()
            .and_then(|a| a.get("org.opencontainers.image.ref.name"))
            .cloned()
    };
    let chosen = match tag {
        Some(t) => ms.iter().find(|m| tag_of(m).as_deref() == Some(t)).cloned(),
        None if ms.len() == 1 => Some(ms[0].clone()),
        None => {
            let tags: Vec<String> = ms.iter().filter_map(tag_of).collect();
            bail!(
                "index.json lists {} images: name one as DIR:TAG (tags: {})",
                ms.len(),
                tags.join(", ")
            );
        }
    };
    let Some(m) = chosen else {
        bail!("index.json has no image tagged {:?}", tag.unwrap_or(""));
    };
    if *m.media_type() == MediaType::ImageIndex {
        return choose_platform(&read_blob(layout, &m)?, platform);
    }
    Ok(m)
}

/// Hashes what passes through.
struct HashRead<'a, R> {
    inner: R,
    h: &'a mut Sha256,
}

impl<R: Read> Read for HashRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.h.update(&buf[..n]);
        Ok(n)
    }
}

/// Extract one layer into `tree`, converting whiteouts; returns its diff id (sha256 of the
/// uncompressed tar) after checking the blob's own digest.
fn extract_layer(p: &Path, desc: &Descriptor, tree: &Path) -> Result<String> {
    let want = desc_sha256(desc)?;
    let f = File::open(p).with_context(|| format!("open {}", p.display()))?;
    let comp_kind = Compression::sniff(&f)?;
    let mut blob_h = Sha256::new();
    let mut diff_h = Sha256::new();
    let mut opaque = Vec::new();
    let mut whiteouts = Vec::new();
    let streamed = (|| -> Result<()> {
        let comp = std::io::BufReader::with_capacity(
            1 << 20,
            HashRead {
                inner: f,
                h: &mut blob_h,
            },
        );
        let dec = comp_kind.decoder(comp)?;
        let diff = HashRead {
            inner: dec,
            h: &mut diff_h,
        };
        let mut ar = tar::Archive::new(diff);
        ar.set_preserve_permissions(true);
        ar.set_preserve_ownerships(true);
        ar.set_unpack_xattrs(true);
        ar.set_preserve_mtime(true);
        ar.set_overwrite(true);
        for e in ar.entries().context("read tar")? {
            let mut e = e.context("read tar entry")?;
            let path = e.path().context("tar entry path")?.into_owned();
            let rel = clean_rel(&path)?;
            let Some(fname) = rel.file_name().map(|n| n.as_bytes().to_vec()) else {
                continue;
            };
            let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
            if fname == b".wh..wh..opq" {
                opaque.push(parent);
                continue;
            }
            if let Some(hidden) = fname.strip_prefix(b".wh.") {
                whiteouts.push(parent.join(std::ffi::OsStr::from_bytes(hidden)));
                continue;
            }
            let kind = e.header().entry_type();
            if kind.is_file() || kind == tar::EntryType::Continuous {
                extract_file(tree, &rel, &mut e)
                    .with_context(|| format!("extract {}", path.display()))?;
                continue;
            }
            if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
                make_node(tree, &rel, e.header())
                    .with_context(|| format!("tar entry {}", path.display()))?;
                continue;
            }
            if !e
                .unpack_in(tree)
                .with_context(|| format!("extract {}", path.display()))?
            {
                bail!("tar entry {} points outside the layer", path.display());
            }
        }
        // The blob's digest covers every byte, including what follows the tar's end marker.
        let mut rest = ar.into_inner();
        std::io::copy(&mut rest, &mut std::io::sink()).context("read layer blob")?;
        Ok(())
    })();
    if let Err(e) = streamed {
        // A damaged blob shows up first as a tar or gzip error: say what is really wrong.
        if file_digest(p).ok() != Some(want) {
            bail!("{}: content does not match its digest", p.display());
        }
        return Err(e);
    }
    for w in &whiteouts {
        let at = safe_path(tree, w)?;
        mknod(&at, libc::S_IFCHR | 0o600, 0)?;
    }
    for o in &opaque {
        let at = safe_path(tree, o)?;
        fs::create_dir_all(&at).with_context(|| format!("create {}", at.display()))?;
        set_xattr(&at, "trusted.overlay.opaque", b"y")?;
    }
    let got = Digest(blob_h.finalize().into());
    if got != want {
        bail!("{}: content does not match its digest", p.display());
    }
    Ok(format!("sha256:{}", Digest(diff_h.finalize().into()).hex()))
}

fn file_digest(p: &Path) -> Result<Digest> {
    let f = File::open(p).with_context(|| format!("open {}", p.display()))?;
    let mut h = Sha256::new();
    let mut r = HashRead {
        inner: f,
        h: &mut h,
    };
    std::io::copy(&mut r, &mut std::io::sink()).with_context(|| format!("read {}", p.display()))?;
    Ok(Digest(h.finalize().into()))
}

/// A tar path as a relative path of normal components ("./a/b" → "a/b"); ".." is refused.
fn clean_rel(p: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            _ => bail!("tar entry {}: '..' in the path", p.display()),
        }
    }
    Ok(out)
}

/// `tree/rel`, with every existing parent a real directory (not a symlink), so nothing done
/// at the path can land outside the tree; missing parents are created.
fn safe_path(tree: &Path, rel: &Path) -> Result<PathBuf> {
    let mut cur = tree.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for (i, c) in comps.iter().enumerate() {
        cur.push(c);
        if i + 1 == comps.len() {
            break;
        }
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!("{}: a parent is not a directory", rel.display()),
            Err(_) => fs::create_dir(&cur).with_context(|| format!("create {}", cur.display()))?,
        }
    }
    Ok(cur)
}

/// A regular file, written sparse: runs of zeros become holes, so a layer of zeros (a few KB
/// of gzip) takes no room in the temporary tree. Owner, mode, xattrs and mtime as tar's
/// `unpack` sets them.
fn extract_file<R: Read>(tree: &Path, rel: &Path, e: &mut tar::Entry<R>) -> Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let at = safe_path(tree, rel)?;
    match fs::symlink_metadata(&at) {
        Ok(m) if m.is_dir() => bail!("{}: a directory is in the way", rel.display()),
        Ok(_) => fs::remove_file(&at).with_context(|| format!("remove {}", at.display()))?,
        Err(_) => {}
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&at)
        .with_context(|| format!("create {}", at.display()))?;
    let mut buf = vec![0u8; 64 << 10];
    let mut len = 0u64;
    loop {
        let n = read_full(e, &mut buf).context("read tar entry")?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|b| *b == 0) {
            f.seek(SeekFrom::Current(n as i64)).context("seek")?;
        } else {
            f.write_all(&buf[..n])
                .with_context(|| format!("write {}", at.display()))?;
        }
        len += n as u64;
    }
    f.set_len(len)
        .with_context(|| format!("truncate {}", at.display()))?;
    let h = e.header();
    let (uid, gid) = (h.uid().context("uid")?, h.gid().context("gid")?);
    // Owner before mode: chown clears the set-id bits.
    std::os::unix::fs::fchown(&f, Some(uid as u32), Some(gid as u32))
        .with_context(|| format!("chown {}", at.display()))?;
    let mode = h.mode().context("mode")? & 0o7777;
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .with_context(|| format!("chmod {}", at.display()))?;
    if let Some(exts) = e.pax_extensions().context("pax extensions")? {
        for ext in exts {
            let ext = ext.context("pax extension")?;
            if let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                set_xattr(&at, name, ext.value_bytes())?;
            }
        }
    }
    // As tar's unpack: a zero mtime becomes 1.
    let mtime = e.header().mtime().context("mtime")?.max(1) as i64;
    let t = nix::sys::time::TimeSpec::new(mtime, 0);
    nix::sys::stat::futimens(&f, &t, &t).with_context(|| format!("utimes {}", at.display()))?;
    Ok(())
}

/// Fill `buf` unless the reader ends first: zero runs are judged on whole blocks.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn make_node(tree: &Path, rel: &Path, h: &tar::Header) -> Result<()> {
    let at = safe_path(tree, rel)?;
    let kind = h.entry_type();
    let ty = if kind.is_character_special() {
        libc::S_IFCHR
    } else if kind.is_block_special() {
        libc::S_IFBLK
    } else {
        libc::S_IFIFO
    };
    let mode = h.mode().context("tar mode")? & 0o7777;
    let dev = libc::makedev(
        h.device_major().ok().flatten().unwrap_or(0),
        h.device_minor().ok().flatten().unwrap_or(0),
    );
    let _ = fs::remove_file(&at);
    mknod(&at, ty | mode, dev)?;
    let uid = h.uid().context("tar uid")? as u32;
    let gid = h.gid().context("tar gid")? as u32;
    std::os::unix::fs::lchown(&at, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", at.display()))?;
    // mknod's mode went through the umask.
    rustix::fs::chmodat(
        rustix::fs::CWD,
        &at,
        rustix::fs::Mode::from_raw_mode(mode),
        rustix::fs::AtFlags::empty(),
    )
    .map_err(std::io::Error::from)
    .with_context(|| format!("chmod {}", at.display()))?;
    Ok(())
}

/// mknod(2) of `mode` (file type and permission bits) at `p`.
fn mknod(p: &Path, mode: libc::mode_t, dev: libc::dev_t) -> Result<()> {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p,
        rustix::fs::FileType::from_raw_mode(mode),
        rustix::fs::Mode::from_raw_mode(mode),
        dev,
    )
    .map_err(std::io::Error::from)
    .with_context(|| format!("mknod {}", p.display()))
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) -> Result<()> {
    rustix::fs::lsetxattr(p, name, value, rustix::fs::XattrFlags::empty())
        .map_err(std::io::Error::from)
        .with_context(|| format!("setxattr {name} on {}", p.display()))
}

/// A private directory for one layer's tree and image, removed with everything in it.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new directory with an unpredictable name, created exclusively: a name another local
    /// user guessed and took first (a symlink, a directory of theirs) is never reused.
    pub fn new(what: &str) -> Result<TempDir> {
        use std::hash::{BuildHasher, RandomState};
        let mut last = None;
        for _ in 0..16 {
            // RandomState is seeded from the kernel's randomness.
            let salt = RandomState::new().hash_one(std::process::id());
            let p = std::env::temp_dir().join(format!("lrun-{what}-{salt:016x}"));
            match fs::DirBuilder::new().mode(0o700).create(&p) {
                Ok(()) => return Ok(TempDir(p)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(p),
                Err(e) => return Err(e).with_context(|| format!("create {}", p.display())),
            }
        }
        let p = last.unwrap_or_default();
        bail!(
            "create a temporary directory: {} and 15 other names exist",
            p.display()
        )
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The parsers `import` runs on an image's untrusted bytes, callable without a store or mkfs:
/// entry points for the fuzz targets in fuzz/, not an API.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// index.json (and a nested index) to the manifest, its config, and the process settings.
    pub fn image_config(
        layout: &Path,
        tag: Option<&str>,
        passwd: Option<&str>,
        group: Option<&str>,
    ) -> Result<ProcessConfig> {
        let (_, config) = read_image(layout, tag, &Platform::host())?;
        process_config(&config.config().clone().unwrap_or_default(), passwd, group)
    }

    /// One layer blob (tar, or gzip'd tar) extracted into `tree`; returns its diff id.
    /// `desc` is the descriptor's JSON, parsed here as `import` parses a manifest's.
    pub fn extract(layout: &Path, desc: &Value, tree: &Path) -> Result<String> {
        let desc: Descriptor =
            serde_json::from_value(desc.clone()).context("parse the layer descriptor")?;
        extract_layer(&blob_path(layout, &desc)?.0, &desc, tree)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:\n";

    #[test]
    fn working_dir_must_be_a_clean_absolute_path() {
        for ok in ["/", "/data", "/usr/local/app", "/a.b/c..d"] {
            assert!(check_working_dir(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/proc/self/fd/4",
            "/proc",
            "../x",
            "x",
            "/a/../b",
            "/a/./b",
            "//a",
            "/a/",
            "/a//b",
            "/..",
            "/a\0b",
        ] {
            let err = check_working_dir(bad).unwrap_err().to_string();
            assert!(err.contains("WorkingDir"), "{bad}: {err}");
        }
    }

    #[test]
    fn env_and_user_fields_are_checked() {
        let ok = json!({"Env": ["A=1", "B="], "User": "app:staff", "Cmd": ["sh"]});
        assert!(check_process_fields(&ok).is_ok());
        for bad in [
            json!({"Env": ["NOVALUE"]}),
            json!({"Env": ["=x"]}),
            json!({"Env": ["A=\0"]}),
            json!({"Env": [1]}),
            json!({"Env": "A=1"}),
            json!({"User": "a:b:c"}),
            json!({"User": ":0"}),
            json!({"User": "a\nb"}),
            json!({"User": 0}),
            json!({"WorkingDir": 5}),
            json!({"Cmd": ["a\0b"]}),
        ] {
            let err = check_process_fields(&bad).unwrap_err().to_string();
            assert!(
                err.starts_with("image config:") && !err.contains('\n'),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn user_forms_resolve_to_ids() {
        let r = |u| resolve_user(u, Some(PASSWD), Some(GROUP));
        assert_eq!(r("").unwrap(), (0, 0));
        assert_eq!(r("1000").unwrap(), (1000, 1001));
        assert_eq!(r("1234").unwrap(), (1234, 0));
        assert_eq!(r("app").unwrap(), (1000, 1001));
        assert_eq!(r("app:staff").unwrap(), (1000, 50));
        assert_eq!(r("7:8").unwrap(), (7, 8));
        assert!(r("ghost").is_err());
        assert!(r("app:nogroup").is_err());
    }

    #[test]
    fn entrypoint_and_cmd_make_args() {
        let c = json!({"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"],
                       "Env": ["A=1"], "WorkingDir": "/srv", "User": "app"});
        let c: Config = serde_json::from_value(c).unwrap();
        let p = process_config(&c, Some(PASSWD), None).unwrap();
        assert_eq!(p.args, ["/bin/sh", "-c", "echo hi"]);
        assert_eq!((p.cwd.as_str(), p.uid, p.gid), ("/srv", 1000, 1001));
        assert!(process_config(&Config::default(), None, None).is_err());
    }

    #[test]
    fn zstd_streams_of_several_frames_decode_whole() {
        use ruzstd::encoding::{CompressionLevel, compress_to_vec};
        let a = b"first frame ".repeat(1000);
        let b = b"second frame".repeat(1000);
        let mut z = compress_to_vec(&a[..], CompressionLevel::Fastest);
        z.extend(compress_to_vec(&b[..], CompressionLevel::Fastest));
        let mut out = Vec::new();
        Compression::Zstd
            .decoder(&z[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, [a, b].concat());
        // A damaged frame is an error, not a short stream.
        let mut bad = compress_to_vec(&b"x".repeat(5000)[..], CompressionLevel::Fastest);
        bad.truncate(bad.len() / 2);
        assert!(
            Compression::Zstd
                .decoder(&bad[..])
                .unwrap()
                .read_to_end(&mut Vec::new())
                .is_err()
        );
    }

    #[test]
    fn tar_paths_stay_relative() {
        assert_eq!(clean_rel(Path::new("./a/b")).unwrap(), Path::new("a/b"));
        assert_eq!(clean_rel(Path::new("/etc/x")).unwrap(), Path::new("etc/x"));
        assert!(clean_rel(Path::new("a/../../x")).is_err());
    }
}
