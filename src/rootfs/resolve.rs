//! Paths inside an untrusted root filesystem, resolved by the kernel with the rootfs as "/"
//! (openat2 RESOLVE_IN_ROOT): a symlink such as `/dev -> /` or `../../etc` never leads out.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, mkdirat};

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// Open `path` (taken as inside `root`) as an O_PATH handle.
pub fn open_in_root(root: BorrowedFd, path: &Path) -> nix::Result<OwnedFd> {
    openat2(root, rel(&clean(path)), how(OFlag::O_PATH))
}

/// `path` cleaned lexically, as an absolute path (Go's filepath.Clean, as runc and crun do):
/// `/mnt/../opt/dd` is `/opt/dd`, whatever `/mnt` is in the image. `..` never goes above `/`.
pub fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// What to create when a mount point does not exist yet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// Open `path` inside `root`, creating missing directories (and the last component as `kind`).
/// Each step is resolved by the kernel inside the root, so a symlink swapped in meanwhile
/// still cannot point outside.
pub fn ensure_in_root(root: BorrowedFd, path: &Path, kind: Kind) -> Result<OwnedFd> {
    let path = &clean(path);
    match open_in_root(root, path) {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(e).with_context(|| format!("open {} in rootfs", path.display())),
    }
    // Only normal components are left once the path is clean.
    let comps: Vec<&OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    if comps.is_empty() {
        bail!("{}: not a path below the root", path.display());
    }
    let mut dir: OwnedFd =
        openat2(root, ".", how(OFlag::O_PATH | OFlag::O_DIRECTORY)).context("open rootfs")?;
    for (i, name) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let next = openat2(dir.as_fd(), *name, how(OFlag::O_PATH));
        let fd = match next {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                if last && kind == Kind::File {
                    let f = openat2(
                        dir.as_fd(),
                        *name,
                        how(OFlag::O_CREAT | OFlag::O_WRONLY).mode(Mode::from_bits_truncate(0o644)),
                    )
                    .with_context(|| format!("create {} in rootfs", path.display()))?;
                    drop(f);
                } else {
                    match mkdirat(dir.as_fd(), *name, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => {
                            return Err(e)
                                .with_context(|| format!("mkdir {} in rootfs", path.display()));
                        }
                    }
                }
                openat2(dir.as_fd(), *name, how(OFlag::O_PATH))
                    .with_context(|| format!("open {} in rootfs", path.display()))?
            }
            Err(e) => return Err(e).with_context(|| format!("open {} in rootfs", path.display())),
        };
        dir = fd;
    }
    Ok(dir)
}

fn rel(path: &Path) -> &Path {
    path.strip_prefix("/").unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_cannot_escape_the_root() {
        let tmp = std::env::temp_dir().join(format!("lrun-resolve-{}", std::process::id()));
        let root = tmp.join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        symlink("/", root.join("escape")).unwrap();
        symlink("../../../../..", root.join("up")).unwrap();
        let rootfd = fs::File::open(&root).unwrap();
        // Creating through an absolute symlink lands inside the root, not in the host's /.
        let fd = ensure_in_root(
            rootfd.as_fd(),
            Path::new("/escape/lrun-test-dir/x"),
            Kind::Dir,
        )
        .expect("create");
        drop(fd);
        assert!(root.join("lrun-test-dir/x").is_dir());
        assert!(!Path::new("/lrun-test-dir").exists());
        let fd = ensure_in_root(rootfd.as_fd(), Path::new("up/etc/f"), Kind::File).expect("file");
        drop(fd);
        assert!(root.join("etc/f").is_file());
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn paths_are_cleaned_lexically() {
        assert_eq!(clean(Path::new("/mnt/../opt/dd")), Path::new("/opt/dd"));
        assert_eq!(clean(Path::new("/../../a/./b/")), Path::new("/a/b"));
        assert_eq!(clean(Path::new("a/b/../../..")), Path::new("/"));
        assert_eq!(clean(Path::new("/dev//null")), Path::new("/dev/null"));
    }
}
