//! Device nodes: the defaults every container gets (config-linux.md "Default Devices") plus
//! `linux.devices`. Without a user namespace they are made with mknod; inside one, mknod is
//! not allowed, so the host's node is bind-mounted onto an empty file instead.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{Mode, SFlag, makedev, mknodat};
use nix::unistd::{Gid, Uid, fchownat};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use super::mounts::bind_host_path;
use super::resolve::{Kind, clean, ensure_in_root, open_in_root};

pub struct Device {
    pub path: PathBuf,
    pub kind: SFlag,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The spec's default devices: /dev/null, zero, full, random, urandom, tty.
pub fn defaults() -> Vec<Device> {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
    .into_iter()
    .map(|(name, major, minor)| Device {
        path: PathBuf::from("/dev").join(name),
        kind: SFlag::S_IFCHR,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

pub fn from_spec(d: &LinuxDevice) -> Device {
    let kind = match d.typ() {
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        _ => SFlag::S_IFCHR,
    };
    Device {
        path: d.path().clone(),
        kind,
        major: d.major() as u64,
        minor: d.minor() as u64,
        mode: d.file_mode().unwrap_or(0o666) & 0o7777,
        uid: d.uid().unwrap_or(0),
        gid: d.gid().unwrap_or(0),
    }
}

/// A device of `linux.devices`: as `create`, but a file already at its path must be that
/// device (config-linux.md: "If a file already exists at path that does not match the
/// requested device, the runtime MUST generate an error"; runc leaves any file there).
pub fn create_listed(root: BorrowedFd, dev: &Device, bind_from_host: bool) -> Result<()> {
    if let Ok(existing) = open_in_root(root, &clean(&dev.path)) {
        let st = nix::sys::stat::fstat(&existing)
            .with_context(|| format!("device {}: fstat", dev.path.display()))?;
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        let same_node = dev.kind == SFlag::S_IFIFO || st.st_rdev == makedev(dev.major, dev.minor);
        if kind != dev.kind || !same_node {
            anyhow::bail!(
                "linux.devices {}: a different file is already there (wanted {} {}:{})",
                dev.path.display(),
                kind_name(dev.kind),
                dev.major,
                dev.minor
            );
        }
        return Ok(());
    }
    create(root, dev, bind_from_host)
}

fn kind_name(kind: SFlag) -> &'static str {
    match kind {
        SFlag::S_IFCHR => "char device",
        SFlag::S_IFBLK => "block device",
        SFlag::S_IFIFO => "fifo",
        _ => "device",
    }
}

/// Create one device node inside the rootfs. An existing node is left as it is.
pub fn create(root: BorrowedFd, dev: &Device, bind_from_host: bool) -> Result<()> {
    let what = || format!("device {}", dev.path.display());
    let path = clean(&dev.path);
    if open_in_root(root, &path).is_ok() {
        return Ok(());
    }
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .with_context(|| format!("{}: no file name", what()))?;
    if bind_from_host {
        let target = ensure_in_root(root, &path, Kind::File).with_context(what)?;
        bind_host_path(&path, target.as_fd())
            .with_context(|| format!("{}: bind from the host", what()))?;
        return Ok(());
    }
    let dir = ensure_in_root(root, parent, Kind::Dir).with_context(what)?;
    // mknodat with an O_PATH directory works; the umask must not strip the requested mode.
    let old = nix::sys::stat::umask(Mode::empty());
    let r = mknodat(
        dir.as_fd(),
        name,
        dev.kind,
        Mode::from_bits_truncate(dev.mode),
        makedev(dev.major, dev.minor),
    );
    nix::sys::stat::umask(old);
    match r {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e).with_context(|| format!("{}: mknod", what())),
    }
    fchownat(
        dir.as_fd(),
        name,
        Some(Uid::from_raw(dev.uid)),
        Some(Gid::from_raw(dev.gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .with_context(|| format!("{}: chown", what()))?;
    Ok(())
}

/// The /dev symlinks runc and the spec provide. Called before pivot_root: `/proc` is still
/// the runtime's own view of the host's.
pub fn create_symlinks(root: BorrowedFd, with_ptmx: bool) -> Result<()> {
    let dev = ensure_in_root(root, Path::new("/dev"), Kind::Dir)?;
    let mut links = vec![
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ];
    // As runc: only where the kernel has one (CONFIG_PROC_KCORE), never a dangling link.
    if Path::new("/proc/kcore").exists() {
        links.push(("core", "/proc/kcore"));
    }
    if with_ptmx {
        links.push(("ptmx", "pts/ptmx"));
    }
    for (name, target) in links {
        // A dev dir opened with O_PATH can serve as dirfd for symlinkat.
        match nix::unistd::symlinkat(target, dev.as_fd(), name) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e).with_context(|| format!("symlink /dev/{name}")),
        }
    }
    Ok(())
}
