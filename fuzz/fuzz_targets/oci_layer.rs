//! An OCI image's tar layer (src/image/oci.rs): gzip, tar entries, whiteouts, device nodes,
//! links, owners and xattrs, extracted as root into a private scratch tree that is removed
//! after every input. Nothing is packed or mounted.
//!
//! Input: one flag byte, then a tar. The harness fixes every tar header's checksum (so
//! mutations reach the entry handling) unless bit 1 is set; bit 0 gzips the result.
#![no_main]

#[path = "scratch.rs"]
mod scratch;

use std::fs;
use std::io::Write;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use lrun::layers::header::Digest;
use lrun::image::oci::fuzzing;
use serde_json::json;

fuzz_target!(|input: &[u8]| {
    let Some((&flags, tar)) = input.split_first() else {
        return;
    };
    let mut blob = tar.to_vec();
    if flags & 2 == 0 {
        fix_checksums(&mut blob);
    }
    if flags & 1 != 0 {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&blob).expect("gzip in memory");
        blob = gz.finish().expect("gzip in memory");
    }

    let dir = scratch::Scratch::new("oci_layer");
    let blobs = dir.0.join("blobs/sha256");
    fs::create_dir_all(&blobs).expect("create blobs/sha256");
    let d = Digest::of(&blob);
    fs::write(blobs.join(d.hex()), &blob).expect("write the blob");
    // The tree sits two levels down, so an entry escaping it by a relative path lands in a
    // directory the harness checks.
    let tree = dir.0.join("a/b/tree");
    fs::create_dir_all(&tree).expect("create the tree");
    let desc = json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar",
        "digest": d.to_string(),
        "size": blob.len(),
    });
    let _ = fuzzing::extract(&dir.0, &desc, &tree);
    only(&dir.0, &["a", "blobs"]);
    only(&dir.0.join("a"), &["b"]);
    only(&dir.0.join("a/b"), &["tree"]);
    only(&blobs, &[d.hex().as_str()]);
});

/// Nothing but `names` in `dir`: the extraction wrote nothing outside its tree.
fn only(dir: &Path, names: &[&str]) {
    for e in fs::read_dir(dir).expect("read a scratch directory") {
        let name = e.expect("read a scratch directory").file_name();
        assert!(
            names.iter().any(|n| name == *n),
            "extraction escaped its tree: {} appeared in {}",
            name.to_string_lossy(),
            dir.display()
        );
    }
}

/// Walk the tar as a reader does (header block, then its data rounded up to 512 bytes) and
/// set each header's checksum.
fn fix_checksums(b: &mut [u8]) {
    let mut at = 0;
    while b.len().saturating_sub(at) >= 512 {
        let block = &mut b[at..at + 512];
        at += 512;
        if block.iter().all(|&x| x == 0) {
            continue;
        }
        let mut h = tar::Header::new_old();
        h.as_mut_bytes().copy_from_slice(block);
        let size = h.entry_size().unwrap_or(0);
        h.set_cksum();
        block.copy_from_slice(h.as_bytes());
        let data = size.div_ceil(512).saturating_mul(512);
        at = at.saturating_add(usize::try_from(data).unwrap_or(usize::MAX));
    }
}
