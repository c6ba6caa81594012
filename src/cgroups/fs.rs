//! Reading and writing cgroup files, creating and removing cgroup directories.

use std::collections::BTreeMap;
use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Write one value with a single write(2): cgroup files parse each write on its own, so a
/// value must never be split.
pub fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let path = dir.join(file);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .with_context(|| format!("open {} for writing", path.display()))?;
    let n = f
        .write(value.as_bytes())
        .with_context(|| format!("write {value:?} to {}", path.display()))?;
    if n != value.len() {
        bail!("short write of {value:?} to {}", path.display());
    }
    Ok(())
}

pub fn read(dir: &Path, file: &str) -> Result<String> {
    let path = dir.join(file);
    fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))
}

/// Read a file that a kernel or configuration may not provide.
pub fn read_opt(dir: &Path, file: &str) -> Result<Option<String>> {
    let path = dir.join(file);
    match crate::utils::read_small_string(&path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

pub fn exists(dir: &Path, file: &str) -> bool {
    dir.join(file).exists()
}

/// Parse a single number; "max" (v2) means no limit and reads as u64::MAX.
pub fn parse_u64(text: &str) -> Result<u64> {
    let t = text.trim();
    if t == "max" {
        return Ok(u64::MAX);
    }
    t.parse().with_context(|| format!("not a number: {t:?}"))
}

pub fn read_u64(dir: &Path, file: &str) -> Result<u64> {
    let text = read(dir, file)?;
    parse_u64(&text).with_context(|| format!("parse {}", dir.join(file).display()))
}

pub fn read_u64_opt(dir: &Path, file: &str) -> Result<Option<u64>> {
    match read_opt(dir, file)? {
        Some(t) => parse_u64(&t)
            .map(Some)
            .with_context(|| format!("parse {}", dir.join(file).display())),
        None => Ok(None),
    }
}

/// Parse "key value" lines (memory.stat, cpu.stat, memory.events); lines that do not fit
/// are skipped, as newer kernels may add other shapes.
pub fn parse_flat_keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), parse_u64(v).ok()?))
        })
        .collect()
}

/// mkdir -p, returning the directories it made, outermost first (v1 cpuset needs each new
/// one filled in from its parent, and only those: existing ones are not ours to write).
pub fn mkdir_all(path: &Path) -> Result<Vec<PathBuf>> {
    // The common case, a new leaf under an existing parent, in one mkdir (no stat of the
    // leaf and its parent first); ENOENT (a parent missing too) takes the walk below.
    match fs::DirBuilder::new().mode(0o755).create(path) {
        Ok(()) => return Ok(vec![path.to_path_buf()]),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(Vec::new()),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("mkdir {}", path.display())),
    }
    let mut missing = Vec::new();
    let mut p = path;
    while !p.exists() {
        missing.push(p.to_path_buf());
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    missing.reverse();
    let mut created = Vec::new();
    for dir in missing {
        match fs::DirBuilder::new().mode(0o755).create(&dir) {
            Ok(()) => created.push(dir),
            // Another container sharing a parent may have just made it.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("mkdir {}", dir.display())),
        }
    }
    Ok(created)
}

/// Pids listed in `cgroup.procs` of `dir` and, if `recursive`, of every cgroup below it.
/// A missing directory has no processes.
pub fn procs(dir: &Path, recursive: bool) -> Result<Vec<i32>> {
    let mut out = Vec::new();
    collect_procs(dir, recursive, &mut out)?;
    Ok(out)
}

fn collect_procs(dir: &Path, recursive: bool, out: &mut Vec<i32>) -> Result<()> {
    let path = dir.join("cgroup.procs");
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        // ENODEV: the cgroup was removed while open (systemd removing an emptied scope).
        Err(e) if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV) => {
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    for line in text.lines() {
        let pid = line
            .trim()
            .parse()
            .with_context(|| format!("bad pid {line:?} in {}/cgroup.procs", dir.display()))?;
        out.push(pid);
    }
    if recursive {
        for sub in subdirs(dir)? {
            collect_procs(&sub, true, out)?;
        }
    }
    Ok(())
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("read directory {}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("read directory {}", dir.display()))?;
        let is_dir = entry
            .file_type()
            .with_context(|| format!("stat {}", entry.path().display()))?
            .is_dir();
        if is_dir {
            out.push(entry.path());
        }
    }
    Ok(out)
}

/// Remove a cgroup and every cgroup below it, deepest first. Gone already is fine.
pub fn remove_tree(dir: &Path) -> Result<()> {
    for sub in subdirs(dir)? {
        remove_tree(&sub)?;
    }
    // rmdir can briefly fail with EBUSY while the last exiting task leaves the cgroup.
    let mut delay = std::time::Duration::from_millis(1);
    for _ in 0..12 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(std::time::Duration::from_millis(100));
            }
            Err(e) => return Err(e).with_context(|| format!("rmdir {}", dir.display())),
        }
    }
    fs::remove_dir(dir).with_context(|| format!("rmdir {} (still busy)", dir.display()))
}

/// Page sizes the hugetlb controller offers, from its file names.
pub fn hugetlb_sizes(dir: &Path) -> Result<Vec<String>> {
    let mut sizes = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("read directory {}", dir.display()))? {
        let name = e
            .with_context(|| format!("read directory {}", dir.display()))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if let Some(size) = name.strip_prefix("hugetlb.").and_then(|r| {
            r.strip_suffix(".limit_in_bytes")
                .or_else(|| r.strip_suffix(".max"))
        }) && !size.contains('.')
        {
            sizes.push(size.to_string());
        }
    }
    sizes.sort();
    Ok(sizes)
}

/// Set a hugetlb limit (`suffix`: "limit_in_bytes" on v1, "max" on v2), and the reservation
/// limit too where the kernel has one: the spec asks for reservation limits when supported,
/// since a page-fault limit alone kills a process on first touch instead of failing mmap.
pub fn write_hugetlb(dir: &Path, page_size: &str, limit: i64, suffix: &str) -> Result<()> {
    let file = format!("hugetlb.{page_size}.{suffix}");
    if !exists(dir, &file) {
        bail!(
            "linux.resources.hugepageLimits: page size {page_size:?} is not available in {}",
            dir.display()
        );
    }
    let value = if limit < 0 && suffix == "max" {
        "max".to_string()
    } else {
        limit.to_string()
    };
    write(dir, &file, &value)?;
    let rsvd = format!("hugetlb.{page_size}.rsvd.{suffix}");
    if exists(dir, &rsvd) {
        write(dir, &rsvd, &value)?;
    }
    Ok(())
}

/// A scratch directory for tests, removed on drop (also when an assertion fails).
#[cfg(test)]
pub(crate) struct TempDir(pub PathBuf);

#[cfg(test)]
impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("lrun-cg-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        TempDir(p)
    }
}

#[cfg(test)]
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_keyed_files_parse_and_max_is_unlimited() {
        let m = parse_flat_keyed("usage_usec 10\nuser_usec 7\nweird\nmax max\n");
        assert_eq!(m["usage_usec"], 10);
        assert_eq!(m["user_usec"], 7);
        assert_eq!(m["max"], u64::MAX);
        assert_eq!(m.len(), 3);
        assert!(parse_u64("12x").is_err());
    }

    #[test]
    fn mkdir_all_reports_only_new_dirs_and_remove_tree_is_idempotent() {
        let tmp = TempDir::new("fs");
        let base = tmp.0.clone();
        let created = mkdir_all(&base.join("a/b")).unwrap();
        assert_eq!(created, vec![base.join("a"), base.join("a/b")]);
        assert!(mkdir_all(&base.join("a/b")).unwrap().is_empty());
        fs::create_dir(base.join("a/b/c")).unwrap();
        remove_tree(&base.join("a")).unwrap();
        assert!(!base.join("a").exists());
        remove_tree(&base.join("a")).unwrap();
    }
}
