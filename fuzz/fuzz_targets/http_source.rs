//! An HTTP layer source as a hostile server answers it (src/distribution/http.rs): the name index
//! lookup, the header fetch in one or two byte ranges (206, 200 ignoring the range, 416,
//! Content-Range, Content-Length), and a resumed download from an offset.
//!
//! Input: 8 bytes of resume offset (little-endian), then the raw HTTP responses the server
//! sends, one per request in order, separated by RESPONSE lines; requests past the last get
//! a 404. The server closes each connection after its response.
#![no_main]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use lrun::layers::header::Digest;

const RESPONSE: &[u8] = b"\n====\n";
const NOT_FOUND: &[u8] =
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
/// Bytes of a download the target reads at most.
const BODY_MAX: u64 = 1 << 20;

static RESPONSES: Mutex<VecDeque<Vec<u8>>> = Mutex::new(VecDeque::new());

/// The server's base URL; it runs on a thread for the whole fuzzing process.
fn server() -> &'static str {
    static BASE: OnceLock<String> = OnceLock::new();
    BASE.get_or_init(|| {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
        let base = format!("http://{}", l.local_addr().expect("local address"));
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                answer(conn);
            }
        });
        base
    })
}

fn answer(mut conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let resp = RESPONSES.lock().expect("responses").pop_front();
    let _ = conn.write_all(resp.as_deref().unwrap_or(NOT_FOUND));
    let _ = conn.shutdown(std::net::Shutdown::Both);
}

fuzz_target!(|input: &[u8]| {
    let Some((offset, rest)) = input.split_first_chunk::<8>() else {
        return;
    };
    let offset = u64::from_le_bytes(*offset);
    let base = server();
    {
        let mut q = RESPONSES.lock().expect("responses");
        q.clear();
        q.extend(split(rest, RESPONSE).into_iter().map(<[u8]>::to_vec));
    }
    let src = lrun::distribution::parse(base).expect("an http:// source");
    let d = Digest::of(b"layer");
    let _ = src.lookup("app", "1.0");
    let _ = src.header(&d);
    // The size a verified header would declare: enough that the body is read up to BODY_MAX.
    let total = offset.saturating_add(BODY_MAX);
    if let Ok(mut body) = src.open(&d, offset, total) {
        let _ = std::io::copy(&mut (&mut body.reader).take(BODY_MAX), &mut std::io::sink());
    }
});

fn split<'a>(mut s: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    while let Some(i) = s.windows(sep.len()).position(|w| w == sep) {
        out.push(&s[..i]);
        s = &s[i + sep.len()..];
    }
    out.push(s);
    out
}
