//! Mounts made and changed through file descriptors (the kernel's new mount API): a mount is
//! built detached (`open_tree` clone or `fsmount`), given its flags while nobody else can
//! reach it (`mount_setattr`), then attached onto a target we hold open (`move_mount`).
//! Nothing is looked up by path a second time, so a symlink swapped into a shared volume
//! between two steps cannot redirect the flags or the propagation to another mount.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use anyhow::{Context, Result};
use nix::errno::Errno;
use rustix::fs::CWD;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags, fsconfig_create,
    fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount, open_tree,
};

/// MOUNT_ATTR_* bits (uapi/linux/mount.h).
pub const ATTR_RDONLY: u64 = 0x1;
pub const ATTR_NOSUID: u64 = 0x2;
pub const ATTR_NODEV: u64 = 0x4;
pub const ATTR_NOEXEC: u64 = 0x8;
/// The atime mode is a 3-bit field: clear all of it to set one of the values below.
pub const ATTR_ATIME_MASK: u64 = 0x70;
pub const ATTR_RELATIME: u64 = 0x0;
pub const ATTR_NOATIME: u64 = 0x10;
pub const ATTR_STRICTATIME: u64 = 0x20;
pub const ATTR_NODIRATIME: u64 = 0x80;
pub const ATTR_NOSYMFOLLOW: u64 = 0x20_0000;

/// Attributes to set and to clear on a mount, as mount_setattr(2) takes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attrs {
    pub set: u64,
    pub clear: u64,
}

impl Attrs {
    pub fn is_empty(&self) -> bool {
        self.set == 0 && self.clear == 0
    }

    /// Later options win: setting a bit forgets an earlier clear of it, and the other way.
    pub fn apply(&mut self, set: u64, clear: u64) {
        self.set = (self.set & !clear) | set;
        self.clear = (self.clear & !set) | clear;
    }

    pub fn union(self, other: Attrs) -> Attrs {
        let mut a = self;
        a.apply(other.set, other.clear);
        a
    }
}

/// struct mount_attr (uapi/linux/mount.h).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn mount_setattr(fd: BorrowedFd, recursive: bool, attr: &MountAttr) -> nix::Result<()> {
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: mount_setattr with an fd we own, an empty NUL-terminated path and a pointer to
    // a struct of the size we pass; rustix 1.1 has no wrapper for it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    Errno::result(rc).map(drop)
}

/// Change the attributes of the mount `fd` refers to (and of its submounts if `recursive`).
/// In a user namespace the kernel locks the flags a mount inherited from a more privileged
/// one (ro, nosuid, nodev, noexec, atime): if clearing them is refused, keep them and only
/// add what was asked, as runc does.
pub fn set_attrs(fd: BorrowedFd, attrs: Attrs, recursive: bool) -> Result<()> {
    if attrs.is_empty() {
        return Ok(());
    }
    let attr = |set, clear| MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    match mount_setattr(fd, recursive, &attr(attrs.set, attrs.clear)) {
        Err(Errno::EPERM) => mount_setattr(fd, recursive, &attr(attrs.set & !ATTR_ATIME_MASK, 0))
            .context("mount_setattr (keeping the flags the kernel locks)"),
        r => r.context("mount_setattr"),
    }
}

/// Set the propagation type (MS_SHARED, MS_SLAVE, MS_PRIVATE or MS_UNBINDABLE, MS_REC for
/// the whole tree) of the mount `fd` refers to.
pub fn set_propagation(fd: BorrowedFd, flags: nix::mount::MsFlags) -> Result<()> {
    use nix::mount::MsFlags;
    let recursive = flags.contains(MsFlags::MS_REC);
    let kind = flags - MsFlags::MS_REC;
    let attr = MountAttr {
        attr_set: 0,
        attr_clr: 0,
        propagation: kind.bits(),
        userns_fd: 0,
    };
    mount_setattr(fd, recursive, &attr).context("set mount propagation (mount_setattr)")
}

/// A detached copy of the mount at `path` (a host path: a bind mount's source), with its
/// submounts if `recursive`.
pub fn clone_path(path: &Path, recursive: bool) -> Result<OwnedFd> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    open_tree(CWD, path, flags).with_context(|| format!("open_tree {}", path.display()))
}

/// A detached copy of the file or directory `fd` refers to, as a bind mount of it.
pub fn clone_fd(fd: BorrowedFd, recursive: bool) -> Result<OwnedFd> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE
        | OpenTreeFlags::OPEN_TREE_CLOEXEC
        | OpenTreeFlags::AT_EMPTY_PATH;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    open_tree(fd, "", flags).context("open_tree (clone of an open file)")
}

/// Attach the detached mount `tree` onto the file or directory `target` refers to.
pub fn attach(tree: BorrowedFd, target: BorrowedFd) -> Result<()> {
    move_mount(
        tree,
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .context("move_mount onto the target")
}

/// A new, detached filesystem mount: `data` is the comma-separated option string mount(2)
/// would take (each `key=value` or `flag` goes to fsconfig, as the kernel itself splits it),
/// `sb` the superblock flags, `attrs` the mount's attributes.
pub fn new_fs(
    fstype: &str,
    source: &str,
    data: &[String],
    sb: &[&str],
    attrs: Attrs,
) -> Result<OwnedFd> {
    let fs =
        fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC).with_context(|| format!("fsopen {fstype}"))?;
    let why = |e: rustix::io::Errno, what: &str| {
        let log = read_fs_log(fs.as_fd());
        anyhow::Error::from(e).context(if log.is_empty() {
            format!("{fstype}: {what}")
        } else {
            format!("{fstype}: {what}: {log}")
        })
    };
    if !source.is_empty() {
        fsconfig_set_string(fs.as_fd(), "source", source).map_err(|e| why(e, "source"))?;
    }
    for opt in data {
        match opt.split_once('=') {
            Some((k, v)) => fsconfig_set_string(fs.as_fd(), k, v),
            None => fsconfig_set_flag(fs.as_fd(), opt.as_str()),
        }
        .map_err(|e| why(e, &format!("option {opt:?}")))?;
    }
    for flag in sb {
        fsconfig_set_flag(fs.as_fd(), *flag).map_err(|e| why(e, &format!("option {flag:?}")))?;
    }
    fsconfig_create(fs.as_fd()).map_err(|e| why(e, "create"))?;
    // fsmount takes the atime mode as one value among the bits; relatime is 0, the default.
    let mount_attrs = MountAttrFlags::from_bits_retain(attrs.set as u32);
    fsmount(fs.as_fd(), FsMountFlags::FSMOUNT_CLOEXEC, mount_attrs).map_err(|e| why(e, "fsmount"))
}

/// The kernel's explanation of a refused fsconfig (e.g. "Unknown parameter 'x'").
fn read_fs_log(fs: BorrowedFd) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    while let Ok(n) = nix::unistd::read(fs, &mut buf) {
        if n == 0 {
            break;
        }
        if !out.is_empty() {
            out.push("; ".to_string());
        }
        let msg = String::from_utf8_lossy(&buf[..n]);
        out.push(msg.get(2..).unwrap_or(&msg).trim().to_string());
    }
    out.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_attributes_win_and_atime_is_one_mode() {
        let mut a = Attrs::default();
        a.apply(ATTR_RDONLY, 0);
        a.apply(0, ATTR_RDONLY);
        assert_eq!(
            a,
            Attrs {
                set: 0,
                clear: ATTR_RDONLY
            }
        );
        a.apply(ATTR_NOATIME, ATTR_ATIME_MASK);
        a.apply(ATTR_STRICTATIME, ATTR_ATIME_MASK);
        assert_eq!(a.set, ATTR_STRICTATIME);
        assert_eq!(a.clear, ATTR_RDONLY | ATTR_ATIME_MASK);
        let u = Attrs {
            set: ATTR_NOSUID,
            clear: 0,
        }
        .union(Attrs {
            set: 0,
            clear: ATTR_NOSUID,
        });
        assert_eq!(
            u,
            Attrs {
                set: 0,
                clear: ATTR_NOSUID
            }
        );
    }
}
