//! A directory source: lrun's layout on a (shared) filesystem. Only regular files are read
//! (`header::open_regular`), each through the pull's stall timeout and deadline.

use std::io::{ErrorKind, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use super::limits::Transfer;
use super::{Body, LayerSource, parse_index_entry, read_bounded, rel_image, rel_index};
use crate::layers::header::{self, Digest};

pub struct DirSource {
    root: PathBuf,
    transfer: Transfer,
}

impl DirSource {
    pub fn new(s: &str, transfer: Transfer) -> Result<DirSource> {
        let root = PathBuf::from(s);
        if !root.is_dir() {
            bail!("layer source {s}: not a directory (or an http:// or https:// URL)");
        }
        Ok(DirSource { root, transfer })
    }
}

impl LayerSource for DirSource {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn lookup(&self, name: &str, version: &str) -> Result<Option<Digest>> {
        let p = self.root.join(rel_index(name, version));
        let f = match header::open_regular(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("open {}", p.display())),
        };
        let text = read_bounded(self.transfer.guard(f, p.display().to_string()))
            .with_context(|| format!("read {}", p.display()))?;
        parse_index_entry(self, &text, name, version).map(Some)
    }

    fn read_range(&self, d: &Digest, start: u64, len: usize) -> Result<Option<(Vec<u8>, u64)>> {
        let p = self.root.join(rel_image(d));
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

    fn open(&self, d: &Digest, offset: u64, _total: u64) -> Result<Body> {
        let p = self.root.join(rel_image(d));
        let mut f = header::open_regular(&p).with_context(|| format!("open {}", p.display()))?;
        f.seek(SeekFrom::Start(offset))
            .with_context(|| format!("seek {}", p.display()))?;
        Ok(Body {
            reader: Box::new(self.transfer.guard(f, p.display().to_string())),
            from_offset: true,
        })
    }
}
