//! The node store: layer images addressed by their digest, plus a name@version index.
//!
//! ```text
//! STORE/layers/sha256/<hex>.lrl   the image (hex = header digest = layer id)
//! STORE/names/<name>@<version>    symlink -> ../layers/sha256/<hex>.lrl
//! STORE/tmp/                      imports in progress (<hex>.<pid>.<n>)
//! STORE/lock                      flock: add, rm and gc take it exclusively
//! ```
//! An image appears under its final name only by rename(2) after its payload digest was
//! checked, so a reader never sees a half-written or unverified image.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use sha2::{Digest as _, Sha256};

use super::header::{self, Digest, FsType, Header};

pub struct Store {
    pub root: PathBuf,
}

/// An image in the store.
#[derive(Debug, Clone)]
pub struct Entry {
    pub digest: Digest,
    pub header: Header,
    pub size: u64,
    pub path: PathBuf,
}

/// How a layer is named: by the bundle or on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerRef {
    Label { name: String, version: String },
    Digest(Digest),
    Path(PathBuf),
}

impl LayerRef {
    /// `sha256:<hex>`, a path (contains '/' or ends in .lrl), or `name@version`.
    pub fn parse(s: &str) -> Result<LayerRef> {
        let s = s.trim();
        if s.starts_with("sha256:") {
            return Ok(LayerRef::Digest(Digest::parse(s)?));
        }
        if s.contains('/') || s.ends_with(&format!(".{}", header::EXTENSION)) {
            return Ok(LayerRef::Path(PathBuf::from(s)));
        }
        if let Some((name, version)) = s.split_once('@') {
            header::check_label("layer name", name, header::NAME_MAX)?;
            header::check_label("layer version", version, header::VERSION_MAX)?;
            return Ok(LayerRef::Label {
                name: name.into(),
                version: version.into(),
            });
        }
        bail!("layer reference {s:?}: use name@version, sha256:<hex> or a path to a .lrl file")
    }
}

impl std::fmt::Display for LayerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayerRef::Label { name, version } => write!(f, "{name}@{version}"),
            LayerRef::Digest(d) => write!(f, "{d}"),
            LayerRef::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Held while the store is changed (add's rename, rm, gc).
pub struct StoreLock {
    _f: File,
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl Store {
    pub fn new(root: &Path) -> Store {
        Store {
            root: root.to_path_buf(),
        }
    }

    fn images_dir(&self) -> PathBuf {
        self.root.join("layers/sha256")
    }

    fn names_dir(&self) -> PathBuf {
        self.root.join("names")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn image_path(&self, d: &Digest) -> PathBuf {
        self.images_dir()
            .join(format!("{}.{}", d.hex(), header::EXTENSION))
    }

    fn ensure_dirs(&self) -> Result<()> {
        for d in [self.images_dir(), self.names_dir(), self.tmp_dir()] {
            fs::create_dir_all(&d).with_context(|| format!("create {}", d.display()))?;
        }
        Ok(())
    }

    pub fn lock(&self) -> Result<StoreLock> {
        self.ensure_dirs()?;
        let p = self.root.join("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .mode(0o600)
            .open(&p)
            .with_context(|| format!("open {}", p.display()))?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("flock {}", p.display()));
        }
        Ok(StoreLock { _f: f })
    }

    /// The header of a stored layer, or None if the store lacks it. The header checksum is
    /// checked (cheap); the payload was checked once, on import.
    pub fn header(&self, d: &Digest) -> Result<Option<Header>> {
        let p = self.image_path(d);
        let f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("open {}", p.display())),
        };
        let (h, got) =
            header::read_header_from(&f).with_context(|| format!("layer image {}", p.display()))?;
        if got != *d {
            bail!(
                "store image {} has digest {got}: the store is corrupt",
                p.display()
            );
        }
        Ok(Some(h))
    }

    /// The digest a name@version points at.
    pub fn lookup_label(&self, name: &str, version: &str) -> Result<Option<Digest>> {
        let link = self.names_dir().join(format!("{name}@{version}"));
        let target = match fs::read_link(&link) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("readlink {}", link.display())),
        };
        let stem = target
            .file_stem()
            .and_then(|s| s.to_str())
            .with_context(|| format!("{}: bad index entry", link.display()))?;
        Ok(Some(Digest::parse(stem).with_context(|| {
            format!("{}: bad index entry", link.display())
        })?))
    }

    /// Resolve a reference to a digest present in the store. A path is imported first (its
    /// payload digest checked once); `base` anchors relative paths.
    pub fn resolve(&self, r: &LayerRef, base: &Path) -> Result<Option<Digest>> {
        match r {
            LayerRef::Digest(d) => Ok(self.image_path(d).exists().then_some(*d)),
            LayerRef::Label { name, version } => {
                let d = self.lookup_label(name, version)?;
                Ok(d.filter(|d| self.image_path(d).exists()))
            }
            LayerRef::Path(p) => {
                let p = if p.is_absolute() {
                    p.clone()
                } else {
                    base.join(p)
                };
                let (h, d) = header::read_header(&p)?;
                if self.image_path(&d).exists() {
                    return Ok(Some(d));
                }
                let (d2, _, _) = self
                    .add(&p)
                    .with_context(|| format!("import {}", h.label()))?;
                Ok(Some(d2))
            }
        }
    }

    /// Import an image. Returns its digest, header and whether it was new.
    pub fn add(&self, src: &Path) -> Result<(Digest, Header, bool)> {
        let (h, d) = header::read_header(src)?;
        self.ensure_dirs()?;
        let fin = self.image_path(&d);
        let mut new = false;
        if !fin.exists() {
            let tmp = self.tmp_dir().join(format!(
                "{}.{}.{}",
                d.hex(),
                std::process::id(),
                TMP_SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            let guard = TmpFile(tmp.clone());
            match fs::hard_link(src, &tmp) {
                Ok(()) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV) | Some(libc::EPERM)) => {
                    copy_synced(src, &tmp, 0o444)?;
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("link {} to {}", src.display(), tmp.display()));
                }
            }
            // Check what will be stored, not the source: it is the copy that gets mounted.
            let (h2, d2) =
                verify(&tmp).with_context(|| format!("layer image {}", src.display()))?;
            if d2 != d || h2 != h {
                bail!("{} changed while it was imported", src.display());
            }
            let _lock = self.lock()?;
            fs::rename(&tmp, &fin)
                .with_context(|| format!("rename {} to {}", tmp.display(), fin.display()))?;
            std::mem::forget(guard);
            sync_dir(&self.images_dir())?;
            new = true;
        }
        self.set_label(&h, &d)?;
        Ok((d, h, new))
    }

    fn set_label(&self, h: &Header, d: &Digest) -> Result<()> {
        let link = self.names_dir().join(h.label());
        let target = PathBuf::from(format!(
            "../layers/sha256/{}.{}",
            d.hex(),
            header::EXTENSION
        ));
        if fs::read_link(&link).ok().as_deref() == Some(target.as_path()) {
            return Ok(());
        }
        let tmp = self.tmp_dir().join(format!(
            "link.{}.{}",
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let guard = TmpFile(tmp.clone());
        std::os::unix::fs::symlink(&target, &tmp)
            .with_context(|| format!("symlink {}", tmp.display()))?;
        fs::rename(&tmp, &link)
            .with_context(|| format!("rename {} to {}", tmp.display(), link.display()))?;
        std::mem::forget(guard);
        Ok(())
    }

    /// Every image in the store, sorted by label then digest.
    pub fn list(&self) -> Result<Vec<Entry>> {
        let dir = self.images_dir();
        let rd = match fs::read_dir(&dir) {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e.with_context(|| format!("read {}", dir.display()))?;
            let name = e.file_name();
            let Some(stem) = name
                .to_str()
                .and_then(|n| n.strip_suffix(&format!(".{}", header::EXTENSION)))
            else {
                continue;
            };
            let Ok(d) = Digest::parse(stem) else { continue };
            let path = e.path();
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            if let Some(header) = self.header(&d)? {
                out.push(Entry {
                    digest: d,
                    header,
                    size,
                    path,
                });
            }
        }
        out.sort_by_key(|e| (e.header.label(), e.digest));
        Ok(out)
    }

    /// Remove an image and the index entries pointing at it. Caller holds the store lock.
    /// Mounted images keep working: the mount holds the inode.
    pub fn remove(&self, d: &Digest) -> Result<()> {
        let names = self.names_dir();
        if let Ok(rd) = fs::read_dir(&names) {
            let target = format!("{}.{}", d.hex(), header::EXTENSION);
            for e in rd.flatten() {
                if fs::read_link(e.path())
                    .ok()
                    .and_then(|t| t.file_name().map(|n| n == target.as_str()))
                    == Some(true)
                {
                    crate::utils::remove_file_if_exists(&e.path())?;
                }
            }
        }
        crate::utils::remove_file_if_exists(&self.image_path(d))
    }

    /// Remove temp files of imports whose process is gone.
    pub fn clean_tmp(&self) -> Result<usize> {
        let mut n = 0;
        let Ok(rd) = fs::read_dir(self.tmp_dir()) else {
            return Ok(0);
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid: Option<i32> = name.split('.').nth(1).and_then(|p| p.parse().ok());
            let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if !alive {
                crate::utils::remove_file_if_exists(&e.path())?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Removes a temp file unless forgotten.
struct TmpFile(PathBuf);

impl Drop for TmpFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Copy `src` to a new file `dst` with `mode`, flushed to disk before returning.
pub(crate) fn copy_synced(src: &Path, dst: &Path, mode: u32) -> Result<()> {
    let mut from = File::open(src).with_context(|| format!("open {}", src.display()))?;
    let mut to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(dst)
        .with_context(|| format!("create {}", dst.display()))?;
    std::io::copy(&mut from, &mut to)
        .with_context(|| format!("copy {} to {}", src.display(), dst.display()))?;
    to.sync_all()
        .with_context(|| format!("fsync {}", dst.display()))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("fsync {}", dir.display()))
}

/// Full check of an image: header, payload digest, filesystem magic. Reads the whole file.
pub fn verify(path: &Path) -> Result<(Header, Digest)> {
    let f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let (h, d) = header::read_header_from(&f)?;
    let mut probe = vec![0u8; FsType::MAGIC_PROBE.min(h.payload_len as usize)];
    f.read_exact_at(&mut probe, h.payload_offset)
        .context("read payload")?;
    h.fs.check_magic(&probe)?;
    let mut hasher = Sha256::new();
    let mut left = h.payload_len;
    let mut buf = vec![0u8; 1 << 20];
    let mut r = &f;
    std::io::Seek::seek(&mut r, std::io::SeekFrom::Start(h.payload_offset)).context("seek")?;
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = r.read(&mut buf[..want]).context("read payload")?;
        if n == 0 {
            bail!("truncated: payload ends {left} bytes early");
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    let got = Digest(hasher.finalize().into());
    if got != h.payload_digest {
        bail!(
            "payload digest mismatch: header says {}, payload is {got}",
            h.payload_digest
        );
    }
    Ok((h, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_by_shape() {
        let d = Digest::of(b"x");
        assert_eq!(
            LayerRef::parse(&d.to_string()).unwrap(),
            LayerRef::Digest(d)
        );
        assert_eq!(
            LayerRef::parse("base@953bc").unwrap(),
            LayerRef::Label {
                name: "base".into(),
                version: "953bc".into()
            }
        );
        assert_eq!(
            LayerRef::parse("layers/app.lrl").unwrap(),
            LayerRef::Path("layers/app.lrl".into())
        );
        assert_eq!(
            LayerRef::parse("app.lrl").unwrap(),
            LayerRef::Path("app.lrl".into())
        );
        assert!(LayerRef::parse("justaname").is_err());
        assert!(LayerRef::parse("a@b@c").is_err());
    }
}
