//! A static HTTP(S) server serving lrun's layout. Ranges fetch headers alone and resume
//! downloads; every response is checked against the size the verified header declares; the
//! client's per-read timeout and `StallGuard` bound each transfer (runtime-spec/distribution.md
//! "Limits").

use std::io::Read;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::limits::{Transfer, TransferError};
use super::{Body, LayerSource, parse_index_entry, read_bounded, rel_image, rel_index};
use crate::layers::header::Digest;

pub struct HttpSource {
    /// Base URL without a trailing '/'.
    base: String,
    agent: ureq::Agent,
    transfer: Transfer,
}

impl HttpSource {
    pub fn new(s: &str, transfer: Transfer) -> HttpSource {
        let stall = transfer.limits.stall;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            // Statuses are handled here (404 → "not in the source", 206/200 for ranges).
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10).min(stall)))
            // A silent server wakes the reader after the stall timeout (StallGuard then
            // decides); a dripping one is caught by StallGuard's byte count.
            .timeout_per_read(Some(stall))
            .build()
            .into();
        HttpSource {
            base: s.trim_end_matches('/').to_string(),
            agent,
            transfer,
        }
    }

    fn url(&self, rel: &str) -> String {
        format!("{}/{rel}", self.base)
    }

    /// A GET whose whole exchange, body included, ends by the pull's deadline.
    fn get(&self, url: &str) -> Result<ureq::RequestBuilder<ureq::typestate::WithoutBody>> {
        let req = self.agent.get(url);
        Ok(
            match self
                .transfer
                .time_left()
                .with_context(|| format!("GET {url}"))?
            {
                Some(left) => req.config().timeout_global(Some(left)).build(),
                None => req,
            },
        )
    }
}

impl LayerSource for HttpSource {
    fn describe(&self) -> String {
        self.base.clone()
    }

    fn lookup(&self, name: &str, version: &str) -> Result<Option<Digest>> {
        let url = self.url(&rel_index(name, version));
        let r = self
            .get(&url)?
            .call()
            .with_context(|| format!("GET {url}"))?;
        match r.status().as_u16() {
            200 => {}
            404 | 410 => return Ok(None),
            s => bail!("GET {url}: HTTP {s}"),
        }
        let (_, body) = r.into_parts();
        let text = read_bounded(self.transfer.guard(body.into_reader(), url.clone()))
            .with_context(|| format!("GET {url}"))?;
        parse_index_entry(self, &text, name, version).map(Some)
    }

    fn read_range(&self, d: &Digest, start: u64, len: usize) -> Result<Option<(Vec<u8>, u64)>> {
        let url = self.url(&rel_image(d));
        let last = start + len as u64 - 1;
        let r = self
            .get(&url)?
            .header("Range", &format!("bytes={start}-{last}"))
            .call()
            .with_context(|| format!("GET {url}"))?;
        range_response(r, &url, start, len, &self.transfer)
    }

    fn open(&self, d: &Digest, offset: u64, total: u64) -> Result<Body> {
        let url = self.url(&rel_image(d));
        let mut req = self.get(&url)?;
        if offset > 0 {
            req = req.header("Range", &format!("bytes={offset}-"));
        }
        let r = req.call().with_context(|| format!("GET {url}"))?;
        match open_response(r, &url, offset, total, &self.transfer)? {
            Some(b) => Ok(b),
            // Our partial file is as long as (or longer than) the image: start over.
            None => self.open(d, 0, total),
        }
    }
}

/// The bytes of a response to a `Range: bytes=start-(start+len-1)` GET, and the file's
/// total size; None when the server has no such file. Shared by every HTTP source.
pub(super) fn range_response(
    mut r: ureq::http::Response<ureq::Body>,
    url: &str,
    start: u64,
    len: usize,
    transfer: &Transfer,
) -> Result<Option<(Vec<u8>, u64)>> {
    let status = r.status().as_u16();
    let total = match status {
        206 => content_range_total(r.headers())
            .with_context(|| format!("GET {url}: 206 without a usable Content-Range"))?,
        200 => {
            content_length(r.headers()).with_context(|| format!("GET {url}: no Content-Length"))?
        }
        // A range starting past the end: a file shorter than a header.
        416 => content_range_total(r.headers()).unwrap_or(0),
        404 | 410 => return Ok(None),
        s => bail!("GET {url}: HTTP {s}"),
    };
    let mut buf = Vec::with_capacity(len);
    if status != 416 {
        let mut rd = transfer.guard(r.body_mut().as_reader(), url.to_string());
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

/// The body of a response to a GET from `offset` (`Range: bytes=offset-`, none for 0) of a
/// file that must have exactly `total` bytes: another announced size is refused before the
/// body is read. None for a 416 (the caller restarts from 0).
pub(super) fn open_response(
    r: ureq::http::Response<ureq::Body>,
    url: &str,
    offset: u64,
    total: u64,
    transfer: &Transfer,
) -> Result<Option<Body>> {
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
        416 => return Ok(None),
        s => bail!("GET {url}: HTTP {s}"),
    };
    let (_, body) = r.into_parts();
    Ok(Some(Body {
        reader: Box::new(transfer.guard(body.into_reader(), url.to_string())),
        from_offset,
    }))
}

pub(super) fn header_str<'a>(h: &'a ureq::http::HeaderMap, name: &str) -> Option<&'a str> {
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
        let src = super::super::parse(&format!("https://127.0.0.1:{port}/")).unwrap();
        let e = src.lookup("a", "1").unwrap_err();
        let msg = format!("{e:#}").to_lowercase();
        // rustls: "received corrupt message of type InvalidContentType".
        assert!(
            msg.contains("invalidcontenttype") || msg.contains("tls"),
            "{msg}"
        );
        t.join().unwrap();
    }
}
