//! Lock files that their last holder may delete: flock plus a link count check.
//!
//! A lock file that is removed when its last holder is done (a layer's `lock`, a pull's
//! per-digest lock) has a race: a waiter can get the flock on an inode that the previous
//! holder unlinked meanwhile, while a newcomer creates a fresh file at the same path and
//! locks that one: two holders of "the" lock. The rule that closes it, followed by every
//! user of this module: a lock file is only ever unlinked by a holder of its lock and never
//! renamed or linked elsewhere. Then a locked inode with links left is still the file at its
//! path, and one fstat after locking tells (`Attempt::Unlinked`: start over).

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::fs::{FlockOperation, Mode, OFlags};
use rustix::io::Errno;

/// How to lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Shared,
    Exclusive,
    /// Exclusive without waiting: `Attempt::Busy` when someone holds it.
    ExclusiveNow,
}

/// A held flock; released when dropped (the file stays unless `unlink_while_held`).
#[derive(Debug)]
pub struct LockFile {
    file: File,
}

/// What one try at taking a lock file gave.
#[derive(Debug)]
pub enum Attempt {
    Locked(LockFile),
    /// The path does not exist (without `create`), or a directory on it is gone.
    Absent,
    /// The lock was taken on a file its holder had unlinked meanwhile: try again.
    Unlinked,
    /// `Kind::ExclusiveNow` and another process holds it.
    Busy,
}

/// Open (with `create`, mode 0600) `path` relative to `dir` (`rustix::fs::CWD` for a path of
/// the caller's), flock it and check it is still linked. Errors are the open's or the flock's.
pub fn try_lock_at(
    dir: impl AsFd,
    path: &Path,
    create: bool,
    kind: Kind,
) -> std::io::Result<Attempt> {
    let mut flags = OFlags::WRONLY | OFlags::CLOEXEC;
    if create {
        flags |= OFlags::CREATE;
    }
    let fd: OwnedFd = match rustix::fs::openat(dir, path, flags, Mode::from_raw_mode(0o600)) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(Attempt::Absent),
        Err(e) => return Err(e.into()),
    };
    let file = File::from(fd);
    let op = match kind {
        Kind::Shared => FlockOperation::LockShared,
        Kind::Exclusive => FlockOperation::LockExclusive,
        Kind::ExclusiveNow => FlockOperation::NonBlockingLockExclusive,
    };
    match rustix::fs::flock(&file, op) {
        Ok(()) => {}
        Err(Errno::WOULDBLOCK) if kind == Kind::ExclusiveNow => return Ok(Attempt::Busy),
        Err(e) => return Err(e.into()),
    }
    if file.metadata()?.nlink() == 0 {
        return Ok(Attempt::Unlinked);
    }
    Ok(Attempt::Locked(LockFile { file }))
}

/// `try_lock_at` with an absolute or cwd-relative path.
pub fn try_lock(path: &Path, create: bool, kind: Kind) -> std::io::Result<Attempt> {
    try_lock_at(rustix::fs::CWD, path, create, kind)
}

/// Wait for an exclusive lock on `path`, creating it if missing, retrying while it is
/// unlinked under us.
pub fn lock_exclusive(path: &Path) -> std::io::Result<LockFile> {
    loop {
        match try_lock(path, true, Kind::Exclusive)? {
            Attempt::Locked(l) => return Ok(l),
            Attempt::Unlinked => continue,
            // With O_CREAT: a directory on the path is missing.
            Attempt::Absent | Attempt::Busy => {
                return Err(std::io::Error::from(std::io::ErrorKind::NotFound));
            }
        }
    }
}

impl LockFile {
    /// Trade a shared lock for an exclusive one. flock does not convert atomically (another
    /// process can take the exclusive lock in between and, as the last holder, unlink the
    /// file), so `false` means the file was unlinked meanwhile: start over.
    pub fn upgrade(&self) -> std::io::Result<bool> {
        rustix::fs::flock(&self.file, FlockOperation::LockExclusive)?;
        Ok(self.file.metadata()?.nlink() > 0)
    }

    /// Remove `path` (the file this lock was taken on) while still holding the lock, then
    /// release it: waiters notice the unlink and start over. An error leaves the file, which
    /// is harmless: the next taker locks it.
    pub fn unlink_while_held(self, path: &Path) {
        let _ = std::fs::remove_file(path);
        drop(self.file);
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// flock an open file (a directory, say) exclusively; `wait: false` gives `Ok(false)` when
/// another process holds it. For locks on files that are never removed.
pub fn flock_exclusive(f: &impl AsFd, wait: bool) -> std::io::Result<bool> {
    let op = if wait {
        FlockOperation::LockExclusive
    } else {
        FlockOperation::NonBlockingLockExclusive
    };
    match rustix::fs::flock(f, op) {
        Ok(()) => Ok(true),
        Err(Errno::WOULDBLOCK) if !wait => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_unlinked_by_its_holder_is_not_taken() {
        let dir = tempdir();
        let p = dir.join("lock");
        let Attempt::Locked(l) = try_lock(&p, true, Kind::Exclusive).unwrap() else {
            panic!("not locked");
        };
        assert!(matches!(
            try_lock(&p, false, Kind::ExclusiveNow).unwrap(),
            Attempt::Busy
        ));
        l.unlink_while_held(&p);
        assert!(matches!(
            try_lock(&p, false, Kind::Exclusive).unwrap(),
            Attempt::Absent
        ));
        let l = lock_exclusive(&p).unwrap();
        assert!(l.upgrade().unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("lrun-lockfile-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
