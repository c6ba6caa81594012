//! The name index of a layer source (src/distribution/dir.rs): `index/<name>/<version>` holds the
//! digest that NAME@VERSION stands for, written by whoever runs the source.
//!
//! Input: a layer reference as a user or a bundle annotation gives it (first line; parsed by
//! LayerRef::parse), then the index entry's bytes. When the reference is NAME@VERSION the entry
//! is written to a directory source and looked up.
#![no_main]

#[path = "scratch.rs"]
mod scratch;

use std::fs;

use libfuzzer_sys::fuzz_target;
use lrun::layers::header::{Digest, check_label};
use lrun::layers::store::LayerRef;

fuzz_target!(|input: &[u8]| {
    let split = input
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(input.len());
    let (reference, entry) = (&input[..split], input.get(split + 1..).unwrap_or(&[]));
    let Ok(reference) = std::str::from_utf8(reference) else {
        return;
    };
    let Ok(LayerRef::Label { name, version }) = LayerRef::parse(reference) else {
        return;
    };
    // The reference is about to become two path components below index/.
    check_label("name", &name, 64).expect("LayerRef::parse checked the name");
    check_label("version", &version, 64).expect("LayerRef::parse checked the version");

    let dir = scratch::Scratch::new("name_index");
    let at = dir.0.join("index").join(&name);
    fs::create_dir_all(&at).expect("create the index directory");
    fs::write(at.join(&version), entry).expect("write the index entry");
    let src = lrun::distribution::parse(dir.0.to_str().expect("a UTF-8 scratch path"))
        .expect("a directory source");
    match src.lookup(&name, &version) {
        Ok(Some(d)) => {
            let text = std::str::from_utf8(entry).expect("a digest was read from text");
            assert_eq!(Digest::parse(text.trim()).ok(), Some(d));
        }
        Ok(None) => panic!("the entry exists but was not found"),
        Err(_) => {}
    }
});
