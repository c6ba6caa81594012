//! A private scratch directory for one fuzz iteration, removed with everything in it.
//! It lives under $TMPDIR, which scripts/fuzz points at a directory of its own.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(target: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("lrun-fuzz-{target}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&p)
            .expect("create the scratch directory");
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
