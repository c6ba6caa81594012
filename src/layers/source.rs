//! Where layers come from: a directory (a shared filesystem) or a plain static HTTP(S) server,
//! both laid out by digest (runtime-spec/distribution.md):
//!
//! ```text
//! SOURCE/layers/sha256/<hex>.lrl     the image, hex = layer digest
//! SOURCE/index/<name>/<version>      text: "sha256:<hex>\n"
//! ```
//! Nothing read from a source is trusted: headers are checked against the digest that named
//! them, and whole images are verified by the store's import before they become visible.

use std::fs;
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::header::{self, Digest, Header};
use super::store;

/// An index entry is one line ("sha256:<64 hex>\n"); anything much longer is not one.
const INDEX_MAX: u64 = 4096;

/// Below this many bytes per stall window a transfer counts as stalled (curl's
/// --speed-limit/--speed-time idea: a server dripping bytes makes "progress" forever).
const STALL_MIN_BYTES: u64 = 1024;

/// How long a pull may take: `--stall-timeout` / `LRUN_PULL_STALL_TIMEOUT` (seconds, default
/// 30) and `--deadline` / `LRUN_PULL_DEADLINE` (seconds for the whole pull, default 3600; 0
/// for none). runtime-spec/distribution.md "Limits".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub stall: Duration,
    pub deadline: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            stall: Duration::from_secs(30),
            deadline: Some(Duration::from_secs(3600)),
        }
    }
}

impl Limits {
    /// The defaults, overridden by LRUN_PULL_STALL_TIMEOUT and LRUN_PULL_DEADLINE.
    pub fn from_env() -> Result<Limits> {
        let mut l = Limits::default();
        if let Ok(v) = std::env::var("LRUN_PULL_STALL_TIMEOUT") {
            l.stall = parse_stall(&v).context("LRUN_PULL_STALL_TIMEOUT")?;
        }
        if let Ok(v) = std::env::var("LRUN_PULL_DEADLINE") {
            l.deadline = parse_deadline(&v).context("LRUN_PULL_DEADLINE")?;
        }
        Ok(l)
    }
}

fn parse_secs(v: &str) -> Result<f64> {
    let s: f64 = v
        .trim()
        .parse()
        .with_context(|| format!("{v:?}: not a number of seconds"))?;
    if !(0.0..=1e9).contains(&s) {
        bail!("{v:?}: not a number of seconds");
    }
    Ok(s)
}

/// Seconds without progress before a transfer is abandoned; more than zero.
pub fn parse_stall(v: &str) -> Result<Duration> {
    let s = parse_secs(v)?;
    if s == 0.0 {
        bail!("{v:?}: the stall timeout must be more than 0 seconds");
    }
    Ok(Duration::from_secs_f64(s))
}

/// Seconds for a whole pull; 0 means no deadline.
pub fn parse_deadline(v: &str) -> Result<Option<Duration>> {
    let s = parse_secs(v)?;
    Ok((s > 0.0).then(|| Duration::from_secs_f64(s)))
}

/// Why a transfer was given up rather than retried.
#[derive(Debug)]
pub enum TransferError {
    /// The source sent or announced something other than what the verified header declares:
    /// never retried, and its partial download is removed.
    Refused(String),
    /// Less than STALL_MIN_BYTES within the stall timeout; the partial file stays.
    Stalled(String),
    /// The pull's deadline passed; the partial file stays.
    Deadline(String),
}

impl std::fmt::Display for TransferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransferError::Refused(m) | TransferError::Stalled(m) | TransferError::Deadline(m) => {
                f.write_str(m)
            }
        }
    }
}

impl std::error::Error for TransferError {}

impl TransferError {
    /// The TransferError inside an error chain, if any (also wrapped in an io::Error).
    pub fn find(e: &anyhow::Error) -> Option<&TransferError> {
        e.chain().find_map(|c| {
            c.downcast_ref::<TransferError>().or_else(|| {
                c.downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref())
                    .and_then(|i| i.downcast_ref::<TransferError>())
            })
        })
    }
}

/// A layer source.
#[derive(Debug, Clone)]
pub struct Source {
    kind: Kind,
    limits: Limits,
    /// When the pull must be over (from `limits.deadline`, counted from `parse`).
    deadline: Option<Instant>,
}

#[derive(Debug, Clone)]
enum Kind {
    Dir(PathBuf),
    /// Base URL without a trailing '/'.
    Http {
        base: String,
        agent: ureq::Agent,
    },
}

/// A stream of an image's bytes from some offset.
pub struct Body {
    pub reader: Box<dyn Read + Send>,
    /// False when the source ignored the requested offset and sends from byte 0.
    pub from_offset: bool,
}

impl Source {
    /// `http://…` / `https://…` is a server, anything else a directory. Limits from the
    /// environment (`Limits::from_env`).
    pub fn parse(s: &str) -> Result<Source> {
        Self::parse_with(s, Limits::from_env()?)
    }

    /// As `parse`, with explicit limits; the deadline starts now.
    pub fn parse_with(s: &str, limits: Limits) -> Result<Source> {
        let deadline = limits.deadline.map(|d| Instant::now() + d);
        if s.starts_with("http://") || s.starts_with("https://") {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                // Statuses are handled here (404 → "not in the source", 206/200 for ranges).
                .http_status_as_error(false)
                .timeout_connect(Some(Duration::from_secs(10).min(limits.stall)))
                // A silent server wakes the reader after the stall timeout (StallGuard then
                // decides); a dripping one is caught by StallGuard's byte count.
                .timeout_per_read(Some(limits.stall))
                .build()
                .into();
            return Ok(Source {
                kind: Kind::Http {
                    base: s.trim_end_matches('/').to_string(),
                    agent,
                },
                limits,
                deadline,
            });
        }
        let p = PathBuf::from(s);
        if !p.is_dir() {
            bail!("layer source {s}: not a directory (or an http:// or https:// URL)");
        }
        Ok(Source {
            kind: Kind::Dir(p),
            limits,
            deadline,
        })
    }

    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Dir(p) => p.display().to_string(),
            Kind::Http { base, .. } => base.clone(),
        }
    }

    /// A GET whose whole exchange, body included, ends by the pull's deadline.
    fn get(
        &self,
        agent: &ureq::Agent,
        url: &str,
    ) -> Result<ureq::RequestBuilder<ureq::typestate::WithoutBody>> {
        let req = agent.get(url);
        Ok(match self.deadline {
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(self.deadline_error()).with_context(|| format!("GET {url}"));
                }
                req.config().timeout_global(Some(left)).build()
            }
            None => req,
        })
    }

    fn deadline_error(&self) -> TransferError {
        TransferError::Deadline(format!(
            "pull deadline of {} s passed",
            self.limits.deadline.map(|d| d.as_secs_f64()).unwrap_or(0.0)
        ))
    }

    /// `r` with the stall timeout and the deadline enforced on every read.
    fn guard<R: Read>(&self, r: R, what: String) -> StallGuard<R> {
        StallGuard {
            inner: r,
            what,
            stall: self.limits.stall,
            deadline: self.deadline,
            deadline_secs: self.limits.deadline.map(|d| d.as_secs_f64()).unwrap_or(0.0),
            window_start: Instant::now(),
            window_bytes: 0,
        }
    }

    fn rel_image(d: &Digest) -> String {
        format!("layers/sha256/{}.{}", d.hex(), header::EXTENSION)
    }

    fn url(base: &str, rel: &str) -> String {
        format!("{base}/{rel}")
    }

    /// The digest the source's index gives for name@version; None if it has none.
    pub fn lookup(&self, name: &str, version: &str) -> Result<Option<Digest>> {
        let rel = format!("index/{name}/{version}");
        let text = match &self.kind {
            Kind::Dir(root) => {
                let p = root.join(&rel);
                let f = match header::open_regular(&p) {
                    Ok(f) => f,
                    Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e).with_context(|| format!("open {}", p.display())),
                };
                read_bounded(self.guard(f, p.display().to_string()))
                    .with_context(|| format!("read {}", p.display()))?
            }
            Kind::Http { base, agent } => {
                let url = Self::url(base, &rel);
                let r = self
                    .get(agent, &url)?
                    .call()
                    .with_context(|| format!("GET {url}"))?;
                match r.status().as_u16() {
                    200 => {}
                    404 | 410 => return Ok(None),
                    s => bail!("GET {url}: HTTP {s}"),
                }
                let (_, body) = r.into_parts();
                read_bounded(self.guard(body.into_reader(), url.clone()))
                    .with_context(|| format!("GET {url}"))?
            }
        };
        let d = Digest::parse(text.trim())
            .with_context(|| format!("{}: index entry {name}@{version}", self.describe()))?;
        Ok(Some(d))
    }

    /// `len` bytes from `start` and the image's total size; None if the source lacks it.
    fn read_range(&self, d: &Digest, start: u64, len: usize) -> Result<Option<(Vec<u8>, u64)>> {
        let rel = Self::rel_image(d);
        match &self.kind {
            Kind::Dir(root) => {
                let p = root.join(&rel);
                let f = match header::open_regular(&p) {
                    Ok(f) => f,
                    Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e).with_context(|| format!("open {}", p.display())),
                };
                let total = f.metadata().context("fstat")?.len();
                let want = len.min(total.saturating_sub(start) as usize);
                let mut buf = vec![0u8; want];
                f.read_exact_at(&mut buf, start)
                    .with_context(|| format!("read {}", p.display()))?;
                Ok(Some((buf, total)))
            }
            Kind::Http { base, agent } => {
                let url = Self::url(base, &rel);
                let last = start + len as u64 - 1;
                let mut r = self
                    .get(agent, &url)?
                    .header("Range", &format!("bytes={start}-{last}"))
                    .call()
                    .with_context(|| format!("GET {url}"))?;
                let status = r.status().as_u16();
                let total = match status {
                    206 => content_range_total(r.headers()).with_context(|| {
                        format!("GET {url}: 206 without a usable Content-Range")
                    })?,
                    200 => content_length(r.headers())
                        .with_context(|| format!("GET {url}: no Content-Length"))?,
                    // A range starting past the end: a file shorter than a header.
                    416 => content_range_total(r.headers()).unwrap_or(0),
                    404 | 410 => return Ok(None),
                    s => bail!("GET {url}: HTTP {s}"),
                };
                let mut buf = Vec::with_capacity(len);
                if status != 416 {
                    let mut rd = self.guard(r.body_mut().as_reader(), url.clone());
                    // A server ignoring Range sends the whole file: skip to `start`, keep `len`.
                    if status == 200 && start > 0 {
                        std::io::copy(&mut (&mut rd).take(start), &mut std::io::sink())
                            .with_context(|| format!("GET {url}"))?;
                    }
                    rd.take(len as u64)
                        .read_to_end(&mut buf)
                        .with_context(|| format!("GET {url}"))?;
                }
                Ok(Some((buf, total)))
            }
        }
    }

    /// The header of the image with digest `d`, checked against `d`; None if the source lacks
    /// it. Reads the header's bytes only.
    pub fn header(&self, d: &Digest) -> Result<Option<Header>> {
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

    /// The image's bytes from `offset` on; `total` is the image size its verified header
    /// declares. A server announcing another size is refused before anything is read.
    pub fn open(&self, d: &Digest, offset: u64, total: u64) -> Result<Body> {
        let rel = Self::rel_image(d);
        match &self.kind {
            Kind::Dir(root) => {
                let p = root.join(&rel);
                let mut f =
                    header::open_regular(&p).with_context(|| format!("open {}", p.display()))?;
                f.seek(SeekFrom::Start(offset))
                    .with_context(|| format!("seek {}", p.display()))?;
                Ok(Body {
                    reader: Box::new(self.guard(f, p.display().to_string())),
                    from_offset: true,
                })
            }
            Kind::Http { base, agent } => {
                let url = Self::url(base, &rel);
                let mut req = self.get(agent, &url)?;
                if offset > 0 {
                    req = req.header("Range", &format!("bytes={offset}-"));
                }
                let r = req.call().with_context(|| format!("GET {url}"))?;
                let refuse = |what: String| -> anyhow::Error {
                    anyhow::Error::new(TransferError::Refused(format!(
                        "GET {url}: {what}, but the header declares {total} bytes"
                    )))
                };
                let length = content_length(r.headers());
                let from_offset = match r.status().as_u16() {
                    206 => {
                        let start = content_range_start(r.headers());
                        if start != Some(offset) {
                            bail!("GET {url}: asked for bytes from {offset}, got {start:?}");
                        }
                        if let Some(t) = content_range_total(r.headers())
                            && t != total
                        {
                            return Err(refuse(format!("the server says the file has {t} bytes")));
                        }
                        if let Some(n) = length
                            && n != total - offset
                        {
                            return Err(refuse(format!(
                                "the server announces {n} bytes from byte {offset}"
                            )));
                        }
                        true
                    }
                    200 => {
                        if let Some(n) = length
                            && n != total
                        {
                            return Err(refuse(format!("the server announces {n} bytes")));
                        }
                        offset == 0
                    }
                    // Our partial file is as long as (or longer than) the image: start over.
                    416 => return self.open(d, 0, total),
                    s => bail!("GET {url}: HTTP {s}"),
                };
                let (_, body) = r.into_parts();
                Ok(Body {
                    reader: Box::new(self.guard(body.into_reader(), url)),
                    from_offset,
                })
            }
        }
    }
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

/// A reader that fails with TransferError::Stalled when fewer than STALL_MIN_BYTES arrive
/// within the stall timeout, and with TransferError::Deadline once the deadline has passed.
struct StallGuard<R> {
    inner: R,
    what: String,
    stall: Duration,
    deadline: Option<Instant>,
    deadline_secs: f64,
    window_start: Instant,
    window_bytes: u64,
}

impl<R: Read> StallGuard<R> {
    fn fail(&self, e: TransferError) -> std::io::Error {
        std::io::Error::new(ErrorKind::TimedOut, e)
    }

    fn stalled(&self) -> std::io::Error {
        self.fail(TransferError::Stalled(format!(
            "{}: stalled: less than {STALL_MIN_BYTES} bytes in {} s (--stall-timeout)",
            self.what,
            self.stall.as_secs_f64()
        )))
    }

    fn past_deadline(&self) -> std::io::Error {
        self.fail(TransferError::Deadline(format!(
            "{}: pull deadline of {} s passed (--deadline)",
            self.what, self.deadline_secs
        )))
    }
}

impl<R: Read> Read for StallGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let now = Instant::now();
        if self.deadline.is_some_and(|d| now >= d) {
            return Err(self.past_deadline());
        }
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if is_timeout(&e) => {
                // The client's own per-read or global timeout: no data came at all.
                if self.deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(self.past_deadline());
                }
                return Err(self.stalled());
            }
            Err(e) => return Err(e),
        };
        self.window_bytes += n as u64;
        let now = Instant::now();
        if n > 0 && now.duration_since(self.window_start) >= self.stall {
            if self.window_bytes < STALL_MIN_BYTES {
                return Err(self.stalled());
            }
            self.window_start = now;
            self.window_bytes = 0;
        }
        Ok(n)
    }
}

/// A client timeout, as ureq reports it through its body reader.
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock)
        || e.get_ref()
            .and_then(|i| i.downcast_ref::<ureq::Error>())
            .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)))
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

fn header_str<'a>(h: &'a ureq::http::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn content_length(h: &ureq::http::HeaderMap) -> Option<u64> {
    header_str(h, "content-length")?.trim().parse().ok()
}

/// "bytes A-B/TOTAL" → TOTAL (also "bytes */TOTAL" of a 416).
fn content_range_total(h: &ureq::http::HeaderMap) -> Option<u64> {
    parse_content_range(header_str(h, "content-range")?).1
}

fn content_range_start(h: &ureq::http::HeaderMap) -> Option<u64> {
    parse_content_range(header_str(h, "content-range")?).0
}

fn parse_content_range(v: &str) -> (Option<u64>, Option<u64>) {
    let Some(rest) = v.trim().strip_prefix("bytes ") else {
        return (None, None);
    };
    let (range, total) = rest.split_once('/').unwrap_or((rest, "*"));
    let start = range.split_once('-').and_then(|(a, _)| a.parse().ok());
    (start, total.parse().ok())
}

/// Copy layer images into a directory source (the layout above): each is verified first,
/// written under a temporary name and renamed, then its index entry is written the same way.
/// Returns (label, digest, whether the image was new) per file.
pub fn publish_dir(root: &Path, files: &[PathBuf]) -> Result<Vec<(String, Digest, bool)>> {
    let mut out = Vec::new();
    for f in files {
        let (h, d) = store::verify(f).with_context(|| format!("layer image {}", f.display()))?;
        let img_dir = root.join("layers/sha256");
        let idx_dir = root.join("index").join(&h.name);
        for dir in [&img_dir, &idx_dir] {
            fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let dst = root.join(Source::rel_image(&d));
        let new = !dst.exists();
        if new {
            let tmp = img_dir.join(format!(".{}.{}.tmp", d.hex(), std::process::id()));
            let res = super::store::copy_synced(f, &tmp, 0o644).and_then(|()| {
                fs::rename(&tmp, &dst)
                    .with_context(|| format!("rename {} to {}", tmp.display(), dst.display()))
            });
            if res.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            res?;
        }
        let idx = idx_dir.join(&h.version);
        let tmp = idx_dir.join(format!(".{}.{}.tmp", h.version, std::process::id()));
        let res = write_file(&tmp, format!("{d}\n").as_bytes()).and_then(|()| {
            fs::rename(&tmp, &idx)
                .with_context(|| format!("rename {} to {}", tmp.display(), idx.display()))
        });
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res?;
        out.push((h.label(), d, new));
    }
    Ok(out)
}

fn write_file(p: &Path, data: &[u8]) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(p)
        .with_context(|| format!("create {}", p.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("write {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parses_start_and_total() {
        assert_eq!(
            parse_content_range("bytes 4096-8191/12288"),
            (Some(4096), Some(12288))
        );
        assert_eq!(parse_content_range("bytes */500"), (None, Some(500)));
        assert_eq!(parse_content_range("bytes 0-9/*"), (Some(0), None));
        assert_eq!(parse_content_range("items 0-9/10"), (None, None));
    }

    /// HTTPS is compiled in: against a plain-HTTP listener the client fails in the TLS
    /// handshake (a rustls error), not with "unsupported scheme" or a TLS-disabled error.
    #[test]
    fn https_goes_through_a_tls_handshake() {
        use std::io::Write as _;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            if let Ok((mut c, _)) = l.accept() {
                let mut buf = [0u8; 512];
                let _ = c.read(&mut buf);
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            }
        });
        let src = Source::parse(&format!("https://127.0.0.1:{port}/")).unwrap();
        let e = src.lookup("a", "1").unwrap_err();
        let msg = format!("{e:#}").to_lowercase();
        // rustls: "received corrupt message of type InvalidContentType".
        assert!(
            msg.contains("invalidcontenttype") || msg.contains("tls"),
            "{msg}"
        );
        t.join().unwrap();
    }

    #[test]
    fn limits_parse_seconds() {
        assert_eq!(parse_stall("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_stall("0.5").unwrap(), Duration::from_millis(500));
        assert!(parse_stall("0").is_err());
        assert!(parse_stall("-1").is_err());
        assert!(parse_stall("NaN").is_err());
        assert!(parse_stall("soon").is_err());
        assert_eq!(parse_deadline("0").unwrap(), None);
        assert_eq!(parse_deadline("90").unwrap(), Some(Duration::from_secs(90)));
        assert!(parse_deadline("inf").is_err());
    }

    /// One byte per `every`, forever.
    struct Drip {
        every: Duration,
    }

    impl Read for Drip {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            std::thread::sleep(self.every);
            buf[0] = b'x';
            Ok(1)
        }
    }

    fn guarded<R: Read>(r: R, stall_ms: u64, deadline_ms: Option<u64>) -> StallGuard<R> {
        StallGuard {
            inner: r,
            what: "test".into(),
            stall: Duration::from_millis(stall_ms),
            deadline: deadline_ms.map(|d| Instant::now() + Duration::from_millis(d)),
            deadline_secs: 0.0,
            window_start: Instant::now(),
            window_bytes: 0,
        }
    }

    fn drain(mut r: impl Read) -> anyhow::Error {
        let mut buf = [0u8; 64];
        loop {
            if let Err(e) = r.read(&mut buf) {
                return anyhow::Error::new(e);
            }
        }
    }

    #[test]
    fn dripping_reader_counts_as_stalled() {
        let e = drain(guarded(
            Drip {
                every: Duration::from_millis(5),
            },
            60,
            None,
        ));
        assert!(
            matches!(TransferError::find(&e), Some(TransferError::Stalled(_))),
            "{e:#}"
        );
    }

    #[test]
    fn deadline_ends_a_steady_reader() {
        // Fast enough never to stall (64 KiB per 5 ms window), ended by the deadline.
        let r = std::io::repeat(b'x');
        let e = drain(guarded(r, 5, Some(50)));
        assert!(
            matches!(TransferError::find(&e), Some(TransferError::Deadline(_))),
            "{e:#}"
        );
    }

    #[test]
    fn steady_reader_is_not_stalled() {
        let mut r = guarded(std::io::repeat(b'x').take(1 << 20), 1, None);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 1 << 20);
    }

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
