//! `lrun layer pull`: fetch the layers a node lacks from a source, verify them, store them.
//!
//! The closure is walked from the headers (the store's for layers it has, the source's for
//! the others: a header is the first 4 KiB of an image), so only missing layers cross the
//! network. Downloads go to `STORE/partial/<hex>.lrl.partial` under a per-digest flock, so
//! concurrent pulls of one layer on a node download it once; an interrupted download resumes
//! from the partial file (HTTP Range); a complete one is made read-only, verified from its fd
//! and renamed into the store, so an image never appears in the store unverified, and a
//! corrupt download is removed. Every read of the source is bounded: exactly the size the
//! verified header declares (a source announcing or sending another size is refused and its
//! partial file removed), a stall timeout and a deadline (limits::Limits).

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, IsTerminal, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::{LayerSource, TransferError};
use crate::layers::closure;
use crate::layers::header::{Digest, Header};
use crate::layers::store::{LayerRef, Store};
use crate::lockfile::{self, LockFile};

/// Attempts per layer: a transfer cut short is resumed this many times before giving up.
const ATTEMPTS: usize = 4;

/// One layer of a pull.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PulledLayer {
    pub name: String,
    pub version: String,
    pub digest: String,
    /// The image's size.
    pub size: u64,
    /// Bytes this pull transferred for it (0 when already present or fetched by another pull).
    pub bytes: u64,
    pub seconds: f64,
}

/// What a pull did.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PullReport {
    pub source: String,
    /// Layers this pull put into the store, bottom-most first.
    pub fetched: Vec<PulledLayer>,
    /// Layers of the closure the store already had (or another pull stored meanwhile).
    pub present: Vec<PulledLayer>,
    pub bytes_fetched: u64,
    pub seconds: f64,
}

pub struct PullOptions {
    /// Show per-layer progress on stderr (callers pass "stderr is a terminal").
    pub progress: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            progress: std::io::stderr().is_terminal(),
        }
    }
}

/// create's `--pull` where the network code is linked (the helper binary): the closures of
/// `refs` from `source` into the runtime's store.
pub fn pull_from(t: &super::PullTarget, source: &str, refs: &[LayerRef]) -> Result<()> {
    let src = super::parse_with(source, t.limits)?;
    pull(&Store::new(t.store), &*src, refs, &PullOptions::default())?;
    Ok(())
}

/// Fetch every layer of the closure of `refs` that the store lacks.
pub fn pull(
    store: &Store,
    src: &dyn LayerSource,
    refs: &[LayerRef],
    o: &PullOptions,
) -> Result<PullReport> {
    let t0 = Instant::now();
    let mut report = PullReport {
        source: src.describe(),
        ..Default::default()
    };
    let mut tops = Vec::with_capacity(refs.len());
    for r in refs {
        tops.push(resolve_top(store, src, r)?);
    }
    let top_digests: Vec<Digest> = tops.iter().map(|(d, _)| *d).collect();
    // The closure from the headers: the store's for layers it has, the source's for the
    // others. A stored image the store cannot vouch for counts as missing: the pull
    // replaces it.
    let mut present = HashSet::new();
    let stack = closure::walk(&top_digests, &mut |d| {
        if let Some(h) = store.header(d).ok().flatten() {
            present.insert(*d);
            return Ok(Some(h));
        }
        src.header(d)
    })
    .map_err(|e| match e.downcast_ref::<closure::MissingLayers>() {
        Some(missing) => not_in_source(src, &tops, refs, missing),
        None => e,
    })?;
    for ((d, _), r) in tops.iter().zip(refs) {
        if let LayerRef::Label { name, version } = r
            && let Some((_, h)) = stack.iter().find(|(x, _)| x == d)
            && (h.name != *name || h.version != *version)
        {
            bail!(
                "{}: the index gives {d} for {name}@{version}, but that image is {}",
                src.describe(),
                h.label()
            );
        }
    }
    // Dependencies before their dependents: a reader of the store mid-pull sees lower
    // layers first, and an interrupted pull leaves whole, usable sub-stacks.
    let order = stack.into_iter().rev().map(|(d, h)| {
        let p = present.contains(&d);
        (d, h, p)
    });
    for (d, h, present) in order {
        let size = h.payload_offset + h.payload_len;
        let mut item = PulledLayer {
            name: h.name.clone(),
            version: h.version.clone(),
            digest: d.to_string(),
            size,
            bytes: 0,
            seconds: 0.0,
        };
        if present {
            report.present.push(item);
            continue;
        }
        let t = Instant::now();
        let fetched = fetch_one(store, src, &d, &h, o)?;
        item.seconds = t.elapsed().as_secs_f64();
        match fetched {
            Some(bytes) => {
                item.bytes = bytes;
                report.bytes_fetched += bytes;
                report.fetched.push(item);
            }
            None => report.present.push(item),
        }
    }
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// The first layer the source lacks, named as the user knows it.
fn not_in_source(
    src: &dyn LayerSource,
    tops: &[(Digest, String)],
    refs: &[LayerRef],
    missing: &closure::MissingLayers,
) -> anyhow::Error {
    let Some(m) = missing.0.first() else {
        return anyhow::anyhow!("{missing}");
    };
    let d = m.digest;
    let (label, needed_by) = match &m.needed {
        Some(n) => (
            format!("{}@{} ", n.name, n.version),
            format!(" (needed by {})", n.by),
        ),
        None => {
            let label = tops
                .iter()
                .zip(refs)
                .find(|((x, _), _)| *x == d)
                .and_then(|(_, r)| match r {
                    LayerRef::Label { name, version } => Some(format!("{name}@{version} ")),
                    _ => None,
                })
                .unwrap_or_default();
            (label, String::new())
        }
    };
    anyhow::anyhow!("layer {label}{d}{needed_by} is not in {}", src.describe())
}

fn resolve_top(store: &Store, src: &dyn LayerSource, r: &LayerRef) -> Result<(Digest, String)> {
    match r {
        LayerRef::Digest(d) => Ok((*d, d.to_string())),
        LayerRef::Label { name, version } => {
            // A name the node already knows needs no round trip to the source.
            if let Some(d) = store.lookup_label(name, version)?
                && store.image_path(&d).exists()
            {
                return Ok((d, r.to_string()));
            }
            match src.lookup(name, version)? {
                Some(d) => Ok((d, r.to_string())),
                None => bail!("{} has no layer {r}", src.describe()),
            }
        }
        LayerRef::Path(p) => bail!(
            "pull {}: name layers by name@version or sha256:HEX (a file is imported with `lrun layer add`)",
            p.display()
        ),
    }
}

/// Download and import one layer. Returns the bytes transferred, or None if another process
/// stored it meanwhile.
fn fetch_one(
    store: &Store,
    src: &dyn LayerSource,
    d: &Digest,
    h: &Header,
    o: &PullOptions,
) -> Result<Option<u64>> {
    let dir = store.partial_dir();
    store.ensure_dir(&dir)?;
    let lock = DigestLock::take(&store.partial_lock_path(d))?;
    if matches!(store.header(d), Ok(Some(_))) {
        lock.release();
        return Ok(None);
    }
    let partial = store.partial_path(d);
    let total = h.payload_offset + h.payload_len;
    let what = || format!("pull {} ({d}) from {}", h.label(), src.describe());
    // A header can declare any size (its digest covers the claim, not its sense): refuse one
    // that cannot fit before writing a byte, rather than filling the disk.
    let have = fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    let free = free_bytes(&dir)?;
    if total.saturating_sub(have) > free {
        lock.release();
        bail!(
            "{}: the image is {} ({total} bytes), {} has {} free",
            what(),
            human(total),
            dir.display(),
            human(free)
        );
    }
    let mut bytes = 0u64;
    let mut last_err = None;
    let mut progress = Progress::new(o.progress, &h.label(), total);
    for _ in 0..ATTEMPTS {
        match download(src, d, &partial, total, &mut progress, &mut bytes) {
            Ok(()) => {
                last_err = None;
                break;
            }
            // Refusals, stalls and the deadline are final: retrying would only repeat them.
            Err(e) if TransferError::find(&e).is_some() => {
                last_err = Some(e);
                break;
            }
            Err(e) => last_err = Some(e),
        }
    }
    progress.finish();
    if let Some(e) = last_err {
        let msg = match TransferError::find(&e) {
            Some(TransferError::Refused(_)) => {
                // Nothing of a refused download is kept: it is not the declared image.
                let _ = fs::remove_file(&partial);
                format!("{}: download refused and removed", what())
            }
            // The partial file stays: the next pull resumes it.
            Some(_) => format!("{}: {bytes} bytes transferred, partial file kept", what()),
            None => format!(
                "{}: {bytes} bytes transferred, giving up after {ATTEMPTS} attempts",
                what()
            ),
        };
        lock.release();
        return Err(e.context(msg));
    }
    let res = import(store, d, h, &partial);
    // Verified and renamed into the store, or rejected: either way the partial has served.
    let _ = fs::remove_file(&partial);
    lock.release();
    if let Err(e) = res {
        return Err(e.context(format!(
            "pull {} ({d}) from {}: download rejected and removed",
            h.label(),
            src.describe()
        )));
    }
    Ok(Some(bytes))
}

/// Bring `partial` to `total` bytes, resuming from what it has.
fn download(
    src: &dyn LayerSource,
    d: &Digest,
    partial: &Path,
    total: u64,
    progress: &mut Progress,
    bytes: &mut u64,
) -> Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(partial)
        .with_context(|| format!("open {}", partial.display()))?;
    let mut have = f.metadata().context("fstat partial download")?.len();
    if have > total {
        have = 0;
    }
    if have == total {
        return Ok(());
    }
    let body = src.open(d, have, total)?;
    if !body.from_offset {
        have = 0;
    }
    f.set_len(have)
        .with_context(|| format!("truncate {}", partial.display()))?;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(have))
        .with_context(|| format!("seek {}", partial.display()))?;
    progress.at(have);
    // More than the header promises is not ours to store.
    let mut reader = body.reader;
    let mut r = (&mut reader).take(total - have);
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                // Keep what arrived for the next attempt.
                let _ = f.sync_data();
                return Err(e).with_context(|| {
                    format!("{d} from {}: transfer cut at byte {have}", src.describe())
                });
            }
        };
        f.write_all(&buf[..n])
            .with_context(|| format!("write {}", partial.display()))?;
        have += n as u64;
        *bytes += n as u64;
        progress.at(have);
    }
    if have == total {
        // A source with more to send than the header declares is not serving this image.
        let mut one = [0u8; 1];
        if matches!(reader.read(&mut one), Ok(n) if n > 0) {
            return Err(anyhow::Error::new(TransferError::Refused(format!(
                "{d} from {}: more than the {total} bytes the header declares",
                src.describe()
            ))));
        }
    }
    f.sync_all()
        .with_context(|| format!("fsync {}", partial.display()))?;
    if have != total {
        bail!(
            "{d} from {}: transfer ended at byte {have} of {total}",
            src.describe()
        );
    }
    Ok(())
}

fn import(store: &Store, d: &Digest, h: &Header, partial: &Path) -> Result<()> {
    // The partial file is the store's own (root-owned, in a 0700 directory): Store::adopt
    // makes it read-only, checks header and payload digest from its fd and renames it into
    // place, with no copy.
    let got = store.adopt(partial, d)?;
    if got != *h {
        bail!("downloaded header differs from the one checked before the download");
    }
    Ok(())
}

/// Bytes root may still write on the filesystem holding `dir` (f_bfree: root's reserve too).
fn free_bytes(dir: &Path) -> Result<u64> {
    let v = rustix::fs::statvfs(dir).with_context(|| format!("statvfs {}", dir.display()))?;
    Ok(v.f_bfree.saturating_mul(v.f_frsize))
}

/// An exclusive lock on a per-digest lock file that is removed on release (the unlink-safe
/// protocol of `crate::lockfile`), so two holders can never coexist.
struct DigestLock {
    lock: LockFile,
    path: PathBuf,
}

impl DigestLock {
    fn take(path: &Path) -> Result<DigestLock> {
        let lock =
            lockfile::lock_exclusive(path).with_context(|| format!("lock {}", path.display()))?;
        Ok(DigestLock {
            lock,
            path: path.to_path_buf(),
        })
    }

    /// Remove the lock file while holding it (waiters notice and retry); on an error path the
    /// file stays, which is harmless: the next pull takes it.
    fn release(self) {
        self.lock.unlink_while_held(&self.path);
    }
}

/// Per-layer progress on stderr: bytes, total, rate; at most ten updates a second.
struct Progress {
    on: bool,
    label: String,
    total: u64,
    start: Instant,
    first: u64,
    last: Option<Instant>,
    at: u64,
}

impl Progress {
    fn new(on: bool, label: &str, total: u64) -> Progress {
        Progress {
            on,
            label: label.to_string(),
            total,
            start: Instant::now(),
            first: 0,
            last: None,
            at: 0,
        }
    }

    fn at(&mut self, n: u64) {
        if self.last.is_none() {
            self.first = n;
        }
        self.at = n;
        if !self.on {
            return;
        }
        let now = Instant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < Duration::from_millis(100))
        {
            return;
        }
        self.last = Some(now);
        self.draw(false);
    }

    fn draw(&self, done: bool) {
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let rate = (self.at - self.first.min(self.at)) as f64 / secs;
        let mut e = std::io::stderr().lock();
        let _ = write!(
            e,
            "\r\x1b[K{} {} / {} {}/s{}",
            self.label,
            human(self.at),
            human(self.total),
            human(rate as u64),
            if done { "\n" } else { "" }
        );
        let _ = e.flush();
    }

    fn finish(&mut self) {
        if self.on {
            self.draw(true);
        }
    }
}

/// 1234567 → "1.2 MiB".
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(10), "10 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(5 << 20), "5.0 MiB");
    }
}
