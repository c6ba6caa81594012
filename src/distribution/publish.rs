//! `lrun layer publish DIR FILE…`: write layer images into a directory source (the layout
//! in `mod.rs`), so that any file or static HTTP server can serve them.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::rel_image;
use crate::layers::header::Digest;
use crate::layers::store;

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
        let dst = root.join(rel_image(&d));
        let new = !dst.exists();
        if new {
            let tmp = img_dir.join(format!(".{}.{}.tmp", d.hex(), std::process::id()));
            let res = store::copy_synced(f, &tmp, 0o644).and_then(|()| {
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
