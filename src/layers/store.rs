//! The node store: layer images addressed by their digest, plus a name@version index.
//!
//! ```text
//! STORE/layers/sha256/<hex>.lrl   the image (hex = header digest = layer id)
//! STORE/names/<name>@<version>    symlink -> ../layers/sha256/<hex>.lrl
//! STORE/tmp/                      imports in progress (<hex>.<pid>.<n>)
//! STORE/lock                      flock: add, rm and gc take it exclusively
//! STORE/partial/<hex>.lrl.partial a pull's download in progress (distribution/pull.rs)
//! STORE/partial/<hex>.lock        its per-digest lock (`crate::lockfile`, removed on release)
//! ```
//! An image appears under its final name only by rename(2) after its payload digest was
//! checked, so a reader never sees a half-written or unverified image. The store owns what
//! it holds: every image is a root-owned, read-only copy (a reflink where the filesystem has
//! them), never a link to the caller's file, and the payload digest is checked on the copy,
//! so nobody who could write the original can change what containers mount.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use sha2::{Digest as _, Sha256};

use super::header::{self, Digest, FsType, Header};
use crate::lockfile;

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

/// A file under `layers/sha256/` the store cannot vouch for: its header does not decode or
/// does not match its name, or it is not a file the store owns (another owner, writable, more
/// than one link, a symlink). `ls` shows it, `verify` reports it, `rm`/`gc` remove it.
#[derive(Debug, Clone)]
pub struct Damaged {
    /// None when the file name is not a digest.
    pub digest: Option<Digest>,
    pub path: PathBuf,
    pub size: u64,
    pub problem: String,
}

/// Stored images: root-owned, read-only for everyone.
const IMAGE_MODE: u32 = 0o444;
/// Store directories: only root may list or change them (layer contents and names can be
/// private, and a writable directory would let others swap images).
const DIR_MODE: u32 = 0o700;

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
            self.ensure_dir(&d)?;
        }
        Ok(())
    }

    /// Create a store directory (and the store's directories above it) owned by us with
    /// DIR_MODE, or check an existing one: another owner is refused (they could swap images).
    /// Directories inside the store are kept at DIR_MODE; the root itself (which an admin may
    /// have made, or made a symlink) only loses group/other write access.
    pub(crate) fn ensure_dir(&self, d: &Path) -> Result<()> {
        let is_root = d == self.root;
        match d.parent() {
            Some(parent) if !is_root && d.starts_with(&self.root) => self.ensure_dir(parent)?,
            Some(parent) if !parent.as_os_str().is_empty() && !parent.exists() => {
                fs::create_dir_all(parent)
                    .with_context(|| format!("create {}", parent.display()))?
            }
            _ => {}
        }
        match fs::DirBuilder::new().mode(DIR_MODE).create(d) {
            Ok(()) => {
                // The umask may have taken bits; set exactly.
                return fs::set_permissions(d, Permissions::from_mode(DIR_MODE))
                    .with_context(|| format!("chmod {}", d.display()));
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("create {}", d.display())),
        }
        let m = if is_root {
            fs::metadata(d)
        } else {
            fs::symlink_metadata(d)
        }
        .with_context(|| format!("stat {}", d.display()))?;
        if !m.is_dir() {
            bail!("store directory {} is not a directory", d.display());
        }
        let me = rustix::process::geteuid().as_raw();
        if m.uid() != me {
            bail!(
                "store directory {} is owned by uid {}, not {me}: refusing a store others can change",
                d.display(),
                m.uid()
            );
        }
        let want = if is_root { m.mode() & 0o7755 } else { DIR_MODE };
        if m.mode() & 0o7777 != want {
            fs::set_permissions(d, Permissions::from_mode(want))
                .with_context(|| format!("chmod {}", d.display()))?;
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
        crate::lockfile::flock_exclusive(&f, true)
            .with_context(|| format!("flock {}", p.display()))?;
        Ok(StoreLock { _f: f })
    }

    /// The header of a stored layer, or None if the store lacks it. The header checksum is
    /// checked (cheap); the payload was checked once, on import.
    pub fn header(&self, d: &Digest) -> Result<Option<Header>> {
        let p = self.image_path(d);
        let f = match open_image(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("open {}", p.display())),
        };
        let meta = f.metadata().context("fstat")?;
        if let Some(problem) = ownership_problem(&meta) {
            bail!(
                "store image {} {problem}: the store does not trust it (check with `lrun layer verify`, remove with `lrun layer rm --force {d}`, or add the image again)",
                p.display()
            );
        }
        let (h, got) = header::read_header_at_len(&f, meta.len())
            .with_context(|| format!("layer image {}", p.display()))?;
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
                if self.holds_intact(&d) {
                    return Ok(Some(d));
                }
                let (d2, _, _) = self
                    .add(&p)
                    .with_context(|| format!("import {}", h.label()))?;
                Ok(Some(d2))
            }
        }
    }

    /// Import an image: a root-owned read-only copy of `src`, verified after the copy. Returns
    /// its digest, header and whether it was new. A stored image the store cannot vouch for
    /// (damaged, foreign) is replaced.
    pub fn add(&self, src: &Path) -> Result<(Digest, Header, bool)> {
        let from = header::open_regular(src).with_context(|| format!("open {}", src.display()))?;
        let (h, d) = header::read_header_from(&from)
            .with_context(|| format!("layer image {}", src.display()))?;
        self.ensure_dirs()?;
        let fin = self.image_path(&d);
        let new = !self.holds_intact(&d);
        if new {
            let tmp = self.tmp_path(&d);
            let guard = TmpFile(tmp.clone());
            let to = copy_owned(&from, h.payload_offset + h.payload_len, &tmp)
                .with_context(|| format!("copy {} into the store", src.display()))?;
            // Check what will be stored, read back from the copy: it is what gets mounted.
            let (h2, d2) =
                verify_file(&to).with_context(|| format!("layer image {}", src.display()))?;
            if d2 != d || h2 != h {
                bail!("{} changed while it was imported", src.display());
            }
            drop(to);
            self.publish(&tmp, &fin)?;
            std::mem::forget(guard);
        }
        self.set_label(&h, &d)?;
        Ok((d, h, new))
    }

    /// Take over a file the store itself wrote (a finished download under `STORE/partial/`)
    /// without copying it: it must be ours (owner, one link, regular), then it is made
    /// read-only, verified from its own fd, and renamed into place.
    pub fn adopt(&self, own: &Path, expect: &Digest) -> Result<Header> {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(own)
            .with_context(|| format!("open {}", own.display()))?;
        let m = f.metadata().context("fstat")?;
        let me = rustix::process::geteuid().as_raw();
        if !m.is_file() || m.nlink() != 1 || m.uid() != me {
            bail!("{} is not a file the store wrote", own.display());
        }
        f.set_permissions(Permissions::from_mode(IMAGE_MODE))
            .with_context(|| format!("chmod {}", own.display()))?;
        let (h, d) = verify_file(&f).with_context(|| format!("layer image {}", own.display()))?;
        if d != *expect {
            bail!("stored image has digest {d}, expected {expect}");
        }
        self.ensure_dirs()?;
        if !self.holds_intact(&d) {
            self.publish(own, &self.image_path(&d))?;
        }
        self.set_label(&h, &d)?;
        Ok(h)
    }

    fn tmp_path(&self, d: &Digest) -> PathBuf {
        self.tmp_dir().join(format!(
            "{}.{}.{}",
            d.hex(),
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// Rename a verified file to its final name under the store lock, then make it durable.
    fn publish(&self, from: &Path, fin: &Path) -> Result<()> {
        let _lock = self.lock()?;
        fs::rename(from, fin)
            .with_context(|| format!("rename {} to {}", from.display(), fin.display()))?;
        sync_dir(&self.images_dir())
    }

    /// The store has `d` as a file it owns whose header matches its name.
    fn holds_intact(&self, d: &Digest) -> bool {
        self.header(d).ok().flatten().is_some()
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

    /// Every image in the store whose header checks out, sorted by label then digest; files
    /// the store cannot vouch for are left out (see `damaged`), never an error.
    pub fn list(&self) -> Result<Vec<Entry>> {
        Ok(self.scan()?.0)
    }

    /// Files under `layers/sha256/` that are not intact images the store owns.
    pub fn damaged(&self) -> Result<Vec<Damaged>> {
        Ok(self.scan()?.1)
    }

    /// Both at once: one pass over the images directory, one header read per image.
    pub fn scan(&self) -> Result<(Vec<Entry>, Vec<Damaged>)> {
        let dir = self.images_dir();
        let rd = match fs::read_dir(&dir) {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
            Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
        };
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for e in rd {
            let e = e.with_context(|| format!("read {}", dir.display()))?;
            let path = e.path();
            let size = fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
            let digest = e
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(&format!(".{}", header::EXTENSION)))
                .and_then(|stem| Digest::parse(stem).ok());
            let Some(d) = digest else {
                bad.push(Damaged {
                    digest: None,
                    path,
                    size,
                    problem: "not named <digest>.lrl".into(),
                });
                continue;
            };
            match self.header(&d) {
                Ok(Some(header)) => good.push(Entry {
                    digest: d,
                    header,
                    size,
                    path,
                }),
                Ok(None) => {}
                Err(err) => bad.push(Damaged {
                    digest: Some(d),
                    path,
                    size,
                    problem: format!("{err:#}"),
                }),
            }
        }
        good.sort_by_key(|e| (e.header.label(), e.digest));
        bad.sort_by(|a, b| a.path.cmp(&b.path));
        Ok((good, bad))
    }

    /// Full check of every stored file: ownership, header, payload digest. One line per
    /// problem, naming the file; empty when all is well. Reads every image completely.
    pub fn verify_all(&self) -> Result<(usize, Vec<String>)> {
        let (good, bad) = self.scan()?;
        let mut problems: Vec<String> = bad
            .iter()
            .map(|b| format!("{}: {}", b.path.display(), b.problem))
            .collect();
        for e in &good {
            let res = open_image(&e.path)
                .with_context(|| format!("open {}", e.path.display()))
                .and_then(|f| verify_file(&f));
            match res {
                Ok((_, d)) if d == e.digest => {}
                Ok((_, d)) => problems.push(format!(
                    "{}: has digest {d}, its name says {}",
                    e.path.display(),
                    e.digest
                )),
                Err(err) => problems.push(format!("{}: {err:#}", e.path.display())),
            }
        }
        Ok((good.len(), problems))
    }

    /// Remove a file found by `damaged` (and the index entries naming its digest). Caller
    /// holds the store lock.
    pub fn remove_damaged(&self, b: &Damaged) -> Result<()> {
        match &b.digest {
            Some(d) => self.remove(d),
            None => crate::utils::remove_file_if_exists(&b.path),
        }
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

    /// Where pulls keep downloads in progress.
    pub fn partial_dir(&self) -> PathBuf {
        self.root.join("partial")
    }

    /// The download in progress of image `d`.
    pub fn partial_path(&self, d: &Digest) -> PathBuf {
        self.partial_dir()
            .join(format!("{}.{}.partial", d.hex(), header::EXTENSION))
    }

    /// The lock a pull holds while downloading `d` (one download per digest per node).
    pub fn partial_lock_path(&self, d: &Digest) -> PathBuf {
        self.partial_dir().join(format!("{}.lock", d.hex()))
    }

    /// Remove partial downloads nobody is working on (their per-digest lock is free): what an
    /// interrupted pull left and no later pull resumed. Returns how many files went.
    pub fn clean_partials(&self) -> Result<usize> {
        let dir = self.partial_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(hex) = name.strip_suffix(&format!(".{}.partial", header::EXTENSION)) else {
                continue;
            };
            let lock_path = dir.join(format!("{hex}.lock"));
            // A pull in progress holds the lock: its partial file is simply skipped.
            let Ok(lockfile::Attempt::Locked(lock)) =
                lockfile::try_lock(&lock_path, true, lockfile::Kind::ExclusiveNow)
            else {
                continue;
            };
            if fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
            lock.unlink_while_held(&lock_path);
        }
        Ok(removed)
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
    let mut from = header::open_regular(src).with_context(|| format!("open {}", src.display()))?;
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

/// Open a stored image without following a symlink planted under its name (a symlink there is
/// reported as damage, not followed to wherever it points).
fn open_image(p: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(p)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                std::io::Error::new(ErrorKind::InvalidData, "is a symlink")
            } else {
                e
            }
        })
}

/// Why a stored image is not a file the store owns, or None. A file others own or can write,
/// or with a second link (a hard link shares the inode with whoever holds the other name),
/// can change behind the digest the store checked once.
pub fn ownership_problem(m: &fs::Metadata) -> Option<String> {
    let me = rustix::process::geteuid().as_raw();
    if !m.is_file() {
        return Some("is not a regular file".into());
    }
    if m.uid() != me {
        return Some(format!("is owned by uid {}, not {me}", m.uid()));
    }
    if m.nlink() != 1 {
        return Some(format!(
            "has {} links (another name shares its content)",
            m.nlink()
        ));
    }
    if m.mode() & 0o7222 != 0 {
        return Some(format!("has mode {:o}, not read-only", m.mode() & 0o7777));
    }
    None
}

/// Copy the first `len` bytes of `from` into a new root-owned file `dst`, read-only for
/// everyone (IMAGE_MODE), flushed to disk: a reflink (FICLONE) where the filesystem can share
/// extents copy-on-write, else a byte copy. Returns the new file, open for reading back.
fn copy_owned(from: &File, len: u64, dst: &Path) -> Result<File> {
    let mut to = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(0o600)
        .open(dst)
        .with_context(|| format!("create {}", dst.display()))?;
    let cloned = rustix::fs::ioctl_ficlone(&to, from).is_ok();
    if !cloned || to.metadata().context("fstat")?.len() != len {
        to.set_len(0).context("truncate")?;
        let mut src = from;
        std::io::Seek::seek(&mut src, std::io::SeekFrom::Start(0)).context("seek")?;
        let n = std::io::copy(&mut src.take(len), &mut to).context("copy")?;
        if n != len {
            bail!("truncated while copied: {n} of {len} bytes");
        }
        to.flush().context("write")?;
    }
    to.set_permissions(Permissions::from_mode(IMAGE_MODE))
        .with_context(|| format!("chmod {}", dst.display()))?;
    to.sync_all()
        .with_context(|| format!("fsync {}", dst.display()))?;
    Ok(to)
}

/// Full check of an image: header, payload digest, filesystem magic. Reads the whole file.
pub fn verify(path: &Path) -> Result<(Header, Digest)> {
    let f = header::open_regular(path).with_context(|| format!("open {}", path.display()))?;
    verify_file(&f)
}

/// `verify` on an open file; reads at absolute offsets.
pub fn verify_file(f: &File) -> Result<(Header, Digest)> {
    let (h, d) = header::read_header_from(f)?;
    let mut probe = vec![0u8; FsType::MAGIC_PROBE.min(h.payload_len as usize)];
    f.read_exact_at(&mut probe, h.payload_offset)
        .context("read payload")?;
    h.fs.check_magic(&probe)?;
    let mut hasher = Sha256::new();
    let mut at = h.payload_offset;
    let end = h.payload_offset + h.payload_len;
    let mut buf = vec![0u8; 1 << 20];
    while at < end {
        let want = buf.len().min((end - at) as usize);
        let n = f.read_at(&mut buf[..want], at).context("read payload")?;
        if n == 0 {
            bail!("truncated: payload ends {} bytes early", end - at);
        }
        hasher.update(&buf[..n]);
        at += n as u64;
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
    fn only_single_link_read_only_files_of_ours_are_trusted() {
        let dir = std::env::temp_dir().join(format!("lrun-store-own-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("img");
        fs::write(&f, b"x").unwrap();
        fs::set_permissions(&f, Permissions::from_mode(0o644)).unwrap();
        let m = || fs::symlink_metadata(&f).unwrap();
        assert!(ownership_problem(&m()).unwrap().contains("not read-only"));
        fs::set_permissions(&f, Permissions::from_mode(IMAGE_MODE)).unwrap();
        assert_eq!(ownership_problem(&m()), None);
        fs::hard_link(&f, dir.join("other-name")).unwrap();
        assert!(ownership_problem(&m()).unwrap().contains("2 links"));
        fs::remove_file(dir.join("other-name")).unwrap();
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&f, Some(65534), None).unwrap();
            assert!(
                ownership_problem(&m())
                    .unwrap()
                    .contains("owned by uid 65534")
            );
        }
        std::os::unix::fs::symlink(&f, dir.join("link")).unwrap();
        let e = open_image(&dir.join("link")).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

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
