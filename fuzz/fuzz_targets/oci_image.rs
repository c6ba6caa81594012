//! An OCI image layout's JSON (src/image/oci.rs): index.json, a nested image index, the
//! manifest and the image config, then the config's process settings with the image's
//! /etc/passwd and /etc/group.
//!
//! Input: parts separated by PART lines: index.json, nested index, manifest, config, passwd,
//! group, tag. Blobs are stored by their digest; in the JSON the placeholders @NESTED@,
//! @MANIFEST@ and @CONFIG@ stand for those digests, so mutations get past the digest checks.
#![no_main]

#[path = "scratch.rs"]
mod scratch;

use std::fs;

use libfuzzer_sys::fuzz_target;
use lrun::layers::header::Digest;
use lrun::image::oci::fuzzing;

const PART: &[u8] = b"\n----\n";

fuzz_target!(|input: &[u8]| {
    let mut parts = split(input, PART).into_iter();
    let mut next = || parts.next().unwrap_or(&[]);
    let (index, nested, manifest, config) = (next(), next(), next(), next());
    let (passwd, group, tag) = (next(), next(), next());

    let dir = scratch::Scratch::new("oci_image");
    let blobs = dir.0.join("blobs/sha256");
    fs::create_dir_all(&blobs).expect("create blobs/sha256");
    let store = |data: &[u8]| {
        let d = Digest::of(data);
        fs::write(blobs.join(d.hex()), data).expect("write a blob");
        d.to_string().into_bytes()
    };
    let config_d = store(config);
    let manifest = replace(manifest, b"@CONFIG@", &config_d);
    let manifest_d = store(&manifest);
    let nested = replace(nested, b"@MANIFEST@", &manifest_d);
    let nested_d = store(&nested);
    let index = replace(index, b"@MANIFEST@", &manifest_d);
    let index = replace(&index, b"@NESTED@", &nested_d);
    fs::write(dir.0.join("index.json"), index).expect("write index.json");

    let text = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_string);
    let tag = text(tag).filter(|t| !t.is_empty());
    let (passwd, group) = (text(passwd), text(group));
    let _ = fuzzing::image_config(&dir.0, tag.as_deref(), passwd.as_deref(), group.as_deref());
});

fn split<'a>(mut s: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    while let Some(i) = find(s, sep) {
        out.push(&s[..i]);
        s = &s[i + sep.len()..];
    }
    out.push(s);
    out
}

fn find(s: &[u8], pat: &[u8]) -> Option<usize> {
    s.windows(pat.len()).position(|w| w == pat)
}

fn replace(s: &[u8], pat: &[u8], with: &[u8]) -> Vec<u8> {
    let parts = split(s, pat);
    parts.join(with)
}
