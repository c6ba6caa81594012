//! How long a transfer from a layer source may take, for every kind of source: a stall
//! timeout (too few bytes per window) and a deadline for the whole pull, enforced on every
//! read by `StallGuard`; and `TransferError`, the failures a pull must not retry.

use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Below this many bytes per stall window a transfer counts as stalled (curl's
/// --speed-limit/--speed-time idea: a server dripping bytes makes "progress" forever).
const STALL_MIN_BYTES: u64 = 1024;

/// How long a pull may take: `--stall-timeout` / `LRUN_PULL_STALL_TIMEOUT` / `pull.stall_timeout`
/// (seconds, default 30) and `--deadline` / `LRUN_PULL_DEADLINE` / `pull.deadline` (seconds for
/// the whole pull, default 3600; 0 for none), in that order of precedence (the last two from
/// the node configuration file, runtime-spec/node-config.md). runtime-spec/distribution.md
/// "Limits".
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
        Limits::default().env_over(|k| std::env::var(k).ok())
    }

    /// `self` (the built-in defaults with the node configuration's values over them),
    /// overridden by LRUN_PULL_STALL_TIMEOUT and LRUN_PULL_DEADLINE as `getenv` reads them.
    pub fn env_over(mut self, getenv: impl Fn(&str) -> Option<String>) -> Result<Limits> {
        if let Some(v) = getenv("LRUN_PULL_STALL_TIMEOUT") {
            self.stall = parse_stall(&v).context("LRUN_PULL_STALL_TIMEOUT")?;
        }
        if let Some(v) = getenv("LRUN_PULL_DEADLINE") {
            self.deadline = parse_deadline(&v).context("LRUN_PULL_DEADLINE")?;
        }
        Ok(self)
    }
}

/// A stall timeout given as a number of seconds (the node configuration file): more than 0.
pub fn stall_from_secs(s: f64) -> Result<Duration> {
    check_secs(s)?;
    if s == 0.0 {
        bail!("the stall timeout must be more than 0 seconds");
    }
    Ok(Duration::from_secs_f64(s))
}

/// A deadline given as a number of seconds; 0 means none.
pub fn deadline_from_secs(s: f64) -> Result<Option<Duration>> {
    check_secs(s)?;
    Ok((s > 0.0).then(|| Duration::from_secs_f64(s)))
}

fn check_secs(s: f64) -> Result<()> {
    if !(0.0..=1e9).contains(&s) {
        bail!("{s}: not a number of seconds (0 to 1e9)");
    }
    Ok(())
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

/// The clock of one pull: its limits and when its deadline falls (counted from `start`).
#[derive(Debug, Clone)]
pub struct Transfer {
    pub limits: Limits,
    deadline: Option<Instant>,
}

impl Transfer {
    pub fn start(limits: Limits) -> Transfer {
        Transfer {
            limits,
            deadline: limits.deadline.map(|d| Instant::now() + d),
        }
    }

    /// Time left before the deadline (`None`: no deadline); an error once it has passed.
    pub fn time_left(&self) -> std::result::Result<Option<Duration>, TransferError> {
        match self.deadline {
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(self.deadline_error());
                }
                Ok(Some(left))
            }
            None => Ok(None),
        }
    }

    fn deadline_error(&self) -> TransferError {
        TransferError::Deadline(format!(
            "pull deadline of {} s passed",
            self.limits.deadline.map(|d| d.as_secs_f64()).unwrap_or(0.0)
        ))
    }

    /// `r` with the stall timeout and the deadline enforced on every read.
    pub fn guard<R: Read>(&self, r: R, what: String) -> StallGuard<R> {
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
}

/// A reader that fails with TransferError::Stalled when fewer than STALL_MIN_BYTES arrive
/// within the stall timeout, and with TransferError::Deadline once the deadline has passed.
pub struct StallGuard<R> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(stall_from_secs(1.5).unwrap(), Duration::from_millis(1500));
        assert!(stall_from_secs(0.0).is_err());
        assert!(stall_from_secs(-3.0).is_err());
        assert!(stall_from_secs(f64::NAN).is_err());
        assert_eq!(deadline_from_secs(0.0).unwrap(), None);
    }

    #[test]
    fn environment_overrides_the_given_limits() {
        let base = Limits {
            stall: Duration::from_secs(5),
            deadline: None,
        };
        assert_eq!(base.env_over(|_| None).unwrap(), base);
        let l = base
            .env_over(|k| (k == "LRUN_PULL_DEADLINE").then(|| "7".to_string()))
            .unwrap();
        assert_eq!(l.stall, Duration::from_secs(5));
        assert_eq!(l.deadline, Some(Duration::from_secs(7)));
        let e = base
            .env_over(|k| (k == "LRUN_PULL_STALL_TIMEOUT").then(|| "0".to_string()))
            .unwrap_err();
        assert!(
            format!("{e:#}").starts_with("LRUN_PULL_STALL_TIMEOUT: "),
            "{e:#}"
        );
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
}
