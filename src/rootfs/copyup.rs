//! `tmpcopyup`: a new tmpfs starts with a copy of the directory it covers (crun's and runc's
//! extension, which podman uses for `--tmpfs`). The source is the image: nothing is followed,
//! symlinks are copied as symlinks, and only regular files, directories, symlinks and fifos
//! are copied.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use anyhow::{Context, Result};
use nix::dir::{Dir, Type};
use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, fchmodat, fstatat, mkdirat, mknodat};
use nix::unistd::{Gid, Uid, fchownat, symlinkat};

const NOFOLLOW_DIR: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Copy the content of the directory `src` (an fd of any kind, O_PATH included) into the
/// root of the detached mount `dst`, and give that root the directory's mode and owner.
pub fn copy_dir_into(src: BorrowedFd, dst: BorrowedFd) -> Result<()> {
    let src =
        openat(src, ".", NOFOLLOW_DIR, Mode::empty()).context("open the covered directory")?;
    let dst = openat(dst, ".", NOFOLLOW_DIR, Mode::empty()).context("open the new tmpfs")?;
    let st = nix::sys::stat::fstat(&src).context("fstat the covered directory")?;
    copy_owner_mode(dst.as_fd(), None, st.st_uid, st.st_gid, st.st_mode)?;
    copy_tree(src, dst.as_fd(), 0)
}

fn copy_tree(src: OwnedFd, dst: BorrowedFd, depth: u32) -> Result<()> {
    if depth > 256 {
        anyhow::bail!("directory tree too deep");
    }
    let mut dir = Dir::from_fd(src).context("read directory")?;
    let src = dir
        .as_fd()
        .try_clone_to_owned()
        .context("dup directory fd")?;
    for entry in dir.iter() {
        let entry = entry.context("read directory")?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        let what = || format!("copy {}", name.to_string_lossy());
        let st = fstatat(&src, name, AtFlags::AT_SYMLINK_NOFOLLOW).with_context(what)?;
        let mode = Mode::from_bits_truncate(st.st_mode & 0o7777);
        match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFDIR => {
                mkdirat(dst, name, Mode::from_bits_truncate(0o700)).with_context(what)?;
                let from = openat(&src, name, NOFOLLOW_DIR, Mode::empty()).with_context(what)?;
                let to = openat(dst, name, NOFOLLOW_DIR, Mode::empty()).with_context(what)?;
                copy_tree(from, to.as_fd(), depth + 1)?;
            }
            SFlag::S_IFREG => {
                let from = openat(
                    &src,
                    name,
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .with_context(what)?;
                let to = openat(
                    dst,
                    name,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .with_context(what)?;
                std::io::copy(&mut File::from(from), &mut File::from(to)).with_context(what)?;
            }
            SFlag::S_IFLNK => {
                let target = readlinkat(&src, name).with_context(what)?;
                symlinkat(target.as_os_str(), dst, name).with_context(what)?;
            }
            SFlag::S_IFIFO => {
                mknodat(dst, name, SFlag::S_IFIFO, mode, 0).with_context(what)?;
            }
            // Device nodes and sockets are not copied (a tmpfs is no place to carry them).
            _ => continue,
        }
        let is_link = entry.file_type() == Some(Type::Symlink)
            || SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK;
        copy_owner_mode(dst, Some((name, is_link)), st.st_uid, st.st_gid, st.st_mode)
            .with_context(what)?;
    }
    Ok(())
}

/// chown then chmod (chown clears setuid bits), never through a symlink.
fn copy_owner_mode(
    dir: BorrowedFd,
    name: Option<(&std::ffi::CStr, bool)>,
    uid: u32,
    gid: u32,
    mode: u32,
) -> Result<()> {
    let (uid, gid) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
    let mode = Mode::from_bits_truncate(mode & 0o7777);
    match name {
        None => {
            nix::unistd::fchown(dir, uid, gid).context("chown")?;
            nix::sys::stat::fchmod(dir, mode).context("chmod")?;
        }
        Some((name, is_link)) => {
            fchownat(dir, name, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW).context("chown")?;
            if !is_link {
                fchmodat(dir, name, mode, FchmodatFlags::NoFollowSymlink).context("chmod")?;
            }
        }
    }
    Ok(())
}
