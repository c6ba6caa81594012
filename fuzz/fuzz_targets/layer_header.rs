//! The .lrl layer header (src/layers/header.rs), as read from a store file or a layer source.
//!
//! Input: one flag byte, 8 bytes of claimed file length (little-endian), then the header bytes.
//! Flag bit 0 makes the harness fill in the header's SHA-256 checksum, so mutations reach the
//! checks behind it; bit 1 reads the bytes from a real file (the path that fetches a header
//! longer than 4096 bytes in a second read); bit 2 reads them through a directory layer source
//! (src/distribution/dir.rs), which fetches the header by digest in one or two ranges.
#![no_main]

#[path = "scratch.rs"]
mod scratch;

use std::fs;

use libfuzzer_sys::fuzz_target;
use lrun::layers::header::{self, Digest, Header, read_header_from};

/// Where the header keeps its own checksum (runtime-spec/layers.md).
const CHECKSUM: std::ops::Range<usize> = 16..48;

fuzz_target!(|input: &[u8]| {
    let Some((&flags, rest)) = input.split_first() else {
        return;
    };
    let Some((len, bytes)) = rest.split_first_chunk::<8>() else {
        return;
    };
    let mut bytes = bytes.to_vec();
    if flags & 1 != 0 {
        fill_checksum(&mut bytes);
    }
    let file_len = u64::from_le_bytes(*len);

    if let Ok((h, d)) = Header::decode(&bytes, file_len) {
        check_round_trip(&h, d, &bytes);
    }
    if flags & 6 == 0 {
        return;
    }
    let dir = scratch::Scratch::new("layer_header");
    // A sparse file of the claimed length, capped so the filesystem accepts it.
    let file_len = file_len.clamp(bytes.len() as u64, 1 << 40);
    if flags & 2 != 0 {
        let p = dir.0.join("image.lrl");
        write_sparse(&p, &bytes, file_len);
        let f = fs::File::open(&p).expect("open the image");
        if let Ok((h, d)) = read_header_from(&f) {
            check_round_trip(&h, d, &bytes);
        }
    }
    if flags & 4 != 0 {
        // Name the file by the digest the header claims, as a source would.
        let claimed = bytes
            .get(CHECKSUM)
            .map_or([0; 32], |c| c.try_into().expect("32 bytes"));
        let claimed = Digest(claimed);
        let layers = dir.0.join("layers/sha256");
        fs::create_dir_all(&layers).expect("create layers/sha256");
        let p = layers.join(format!("{}.{}", claimed.hex(), header::EXTENSION));
        write_sparse(&p, &bytes, file_len);
        let src = lrun::distribution::parse(dir.0.to_str().expect("a UTF-8 scratch path"))
            .expect("a directory source");
        if let Ok(Some(h)) = src.header(&claimed) {
            check_round_trip(&h, claimed, &bytes);
        }
    }
});

fn write_sparse(p: &std::path::Path, bytes: &[u8], len: u64) {
    fs::write(p, bytes).expect("write the image");
    let f = fs::OpenOptions::new()
        .write(true)
        .open(p)
        .expect("reopen the image");
    f.set_len(len).expect("extend the image");
}

/// The checksum a correct writer would store: SHA-256 of the header with the field zeroed.
/// The header's length is what its own length field says (when the bytes hold that much).
fn fill_checksum(b: &mut [u8]) {
    if b.len() < 256 {
        return;
    }
    let hlen = u32::from_le_bytes(b[12..16].try_into().expect("4 bytes")) as usize;
    let end = if hlen >= 256 && hlen <= b.len() {
        hlen
    } else {
        b.len()
    };
    b[CHECKSUM].fill(0);
    let d = Digest::of(&b[..end]);
    b[CHECKSUM].copy_from_slice(&d.0);
}

/// A header that decodes is exactly what encode writes for it: no two byte strings decode to
/// the same header, so the digest names one header.
fn check_round_trip(h: &Header, d: Digest, bytes: &[u8]) {
    let (enc, ed) = h.encode().expect("a decoded header encodes");
    assert_eq!(ed, d, "digest of the re-encoded header");
    // Past the input's end, the image files the harness writes read as zeros.
    let mut read = bytes.to_vec();
    read.resize(read.len().max(enc.len()), 0);
    assert_eq!(&read[..enc.len()], &enc[..], "re-encoded header bytes");
}
