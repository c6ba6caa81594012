//! Each layer mounted once per node, shared by every container stacked on it.
//!
//! ```text
//! ROOT/@layers/<hex>/lock         flock: exclusive to mount, unmount or remove; shared to add a
//!                                 reference to a mounted layer (runtime-spec/layers.md)
//! ROOT/@layers/<hex>/mnt          the layer's read-only mount
//! ROOT/@layers/<hex>/users/<id>   one file per container holding a reference; content: the
//!                                 container's state dir
//! ```
//! The reference count is the number of files in users/, so it cannot drift: a process that
//! dies leaves at most its own file, which `release_root` (re-run by delete) or `gc` removes.
//! '@' is not allowed in container ids, so the directory can never be mistaken for one.
//!
//! A layer whose last reference goes stays mounted for a while (`IdlePolicy`): the next
//! container on it then only adds its reference. Such an *idle* layer has a mount and no
//! `users/` directory; it became idle when `<hex>/` was last modified (the release's rmdir of
//! `users/`). `sweep_idle` unmounts the idle layers past the policy's time or count; create,
//! delete and gc call it, so an expired mount goes with the next lrun command that looks.

use std::cell::RefCell;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use nix::mount::{MntFlags, MsFlags};
use rustix::fs::{AtFlags, Mode, OFlags, StatxAttributes, StatxFlags};
use rustix::io::Errno;

use crate::lockfile::{self, Attempt, Kind, LockFile};

use super::header::{Digest, FsType, Header};
use super::loopdev;

pub const DIR_NAME: &str = "@layers";

/// How long, and how many, layer mounts nobody uses stay mounted for the next container
/// (node config `layers.idle_timeout`/`layers.idle_max`, runtime-spec/layers.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdlePolicy {
    /// An idle layer older than this is unmounted by the next sweep.
    pub timeout: Duration,
    /// At most this many idle layers are kept (the most recently used).
    pub max: usize,
}

impl IdlePolicy {
    /// Unmount a layer with its last reference.
    pub const NONE: IdlePolicy = IdlePolicy {
        timeout: Duration::ZERO,
        max: 0,
    };
    /// Five minutes covers a service's restart and a scheduler's quick reschedule; 64
    /// layers bound what a node keeps mounted for nobody.
    pub const DEFAULT: IdlePolicy = IdlePolicy {
        timeout: Duration::from_secs(300),
        max: 64,
    };

    pub fn keeps(&self) -> bool {
        !self.timeout.is_zero() && self.max > 0
    }
}

pub struct Shared {
    pub dir: PathBuf,
    idle: IdlePolicy,
    /// `O_PATH` fd on `dir`, opened on first use so a prepare creates `@layers` once, not once
    /// per layer; reopened if a release removed the directory under us.
    dirfd: RefCell<Option<Rc<OwnedFd>>>,
}

/// A flock (shared or exclusive) on one layer's lock file (`crate::lockfile`'s protocol:
/// only a holder unlinks it).
struct LayerLock {
    lock: LockFile,
    /// Taken exclusively (`Kind::Shared` was asked for, but this call made the layer
    /// directory, so the layer is about to be mounted: see `lock`).
    exclusive: bool,
    /// This call made the layer directory (so `users/` most likely does not exist yet).
    fresh: bool,
}

impl LayerLock {
    /// Trade a shared lock for an exclusive one; `false`: the file was unlinked meanwhile,
    /// start over (`LockFile::upgrade`).
    fn upgrade(&self) -> Result<bool> {
        self.lock.upgrade().context("flock layer lock exclusively")
    }
}

/// How a layer is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// erofs mounted straight from the image file (`fsoffset=`), no block device.
    File,
    /// A read-only loop device over the payload range.
    Loop,
}

impl Shared {
    pub fn new(state_root: &Path, idle: IdlePolicy) -> Shared {
        Shared {
            dir: state_root.join(DIR_NAME),
            idle,
            dirfd: RefCell::new(None),
        }
    }

    pub fn layer_dir(&self, d: &Digest) -> PathBuf {
        self.dir.join(d.hex())
    }

    pub fn mount_point(&self, d: &Digest) -> PathBuf {
        self.layer_dir(d).join("mnt")
    }

    /// The fd on `@layers`; with `create`, the directory is made first if missing. `None`
    /// when it does not exist and `create` is false.
    fn dirfd(&self, create: bool) -> Result<Option<Rc<OwnedFd>>> {
        if let Some(fd) = self.dirfd.borrow().as_ref() {
            return Ok(Some(fd.clone()));
        }
        if create {
            create_private_dir(&self.dir)?;
        }
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = match rustix::fs::open(&self.dir, flags, Mode::empty()) {
            Ok(fd) => Rc::new(fd),
            Err(Errno::NOENT) if !create => return Ok(None),
            Err(e) => {
                return Err(std::io::Error::from(e))
                    .with_context(|| format!("open {}", self.dir.display()));
            }
        };
        *self.dirfd.borrow_mut() = Some(fd.clone());
        Ok(Some(fd))
    }

    /// Forget the `@layers` fd: the directory it names was removed (ENOENT below it).
    fn reopen(&self) {
        *self.dirfd.borrow_mut() = None;
    }

    /// Lock layer `d`. With `create`, its directory and lock file are made if missing;
    /// without, `None` means the layer has no lock file, hence no reference and no mount
    /// (a release removes `users/` and `mnt` before the lock file). `LOCK_SH` becomes
    /// `LOCK_EX` when this call made the layer directory: a new layer must be mounted, and
    /// locking exclusively at once saves the shared round and the conversion.
    fn lock(&self, d: &Digest, create: bool, kind: Kind) -> Result<Option<LayerLock>> {
        let hex = d.hex();
        let lock_rel = format!("{hex}/lock");
        // Whoever empties a layer directory deletes its lock file while holding it; a waiter
        // that then gets the lock on the deleted inode must start over, or two processes
        // could each hold "the" lock on different inodes.
        loop {
            let Some(dfd) = self.dirfd(create)? else {
                return Ok(None);
            };
            let mut fresh = false;
            if create {
                match rustix::fs::mkdirat(&*dfd, hex.as_str(), Mode::from_raw_mode(0o777)) {
                    Ok(()) => fresh = true,
                    Err(Errno::EXIST) => {}
                    // The last release removed @layers itself after we opened it.
                    Err(Errno::NOENT) => {
                        self.reopen();
                        continue;
                    }
                    Err(e) => {
                        return Err(std::io::Error::from(e))
                            .with_context(|| format!("create {}", self.layer_dir(d).display()));
                    }
                }
            }
            let kind = if fresh { Kind::Exclusive } else { kind };
            let attempt = lockfile::try_lock_at(&*dfd, Path::new(&lock_rel), create, kind)
                .with_context(|| format!("lock {}/lock", self.layer_dir(d).display()))?;
            match attempt {
                Attempt::Locked(lock) => {
                    return Ok(Some(LayerLock {
                        lock,
                        exclusive: kind == Kind::Exclusive,
                        fresh,
                    }));
                }
                // Removed between our mkdir and open by a releasing process: retry.
                Attempt::Absent if create => continue,
                Attempt::Absent => return Ok(None),
                Attempt::Unlinked | Attempt::Busy => continue,
            }
        }
    }

    /// Take `user`'s reference on layer `d`, mounting it if no one has. Returns the mount
    /// point.
    ///
    /// A layer that is already mounted only needs the reference file, which is added under
    /// a *shared* lock so concurrent creates on one layer do not queue; mounting (and every
    /// release) takes the lock exclusively. Why that is safe: runtime-spec/layers.md,
    /// "Reference protocol".
    pub fn acquire(
        &self,
        d: &Digest,
        h: &Header,
        image: &Path,
        user: &str,
        user_dir: &Path,
    ) -> Result<PathBuf> {
        let hex = d.hex();
        let ldir = self.layer_dir(d);
        let mnt = ldir.join("mnt");
        let mnt_rel = format!("{hex}/mnt");
        loop {
            let Some(l) = self.lock(d, true, Kind::Shared)? else {
                bail!("lock layer {d}: no lock file after creating it");
            };
            // The lock is held, so the fd is open (and @layers/<hex> cannot vanish while the
            // lock file we hold is linked in it).
            let Some(dfd) = self.dirfd(true)? else {
                bail!("{} vanished", self.dir.display());
            };
            // Needed: `mnt` can exist unmounted (a crash between its mkdir and the mount, or a
            // failed mount), and a mounted layer must not be mounted twice. Under the shared
            // lock no one can mount or unmount, so the answer holds until we unlock.
            if !l.exclusive {
                if mount_root_at(dfd.as_fd(), &mnt_rel, &mnt)? == Some(true) {
                    self.add_user(dfd.as_fd(), d, user, user_dir, false)?;
                    return Ok(mnt);
                }
                if !l.upgrade()? {
                    continue;
                }
            }
            // Exclusive from here: the reference file first, so a crash before the mount
            // leaves a reference that release/gc will find and drop (and then unmount).
            let uf = self.add_user(dfd.as_fd(), d, user, user_dir, l.fresh)?;
            // Checked again: another process may have mounted it while we waited.
            let mounted = match mount_root_at(dfd.as_fd(), &mnt_rel, &mnt)? {
                Some(m) => m,
                None => {
                    mkdirat_ok_if_exists(dfd.as_fd(), &mnt_rel, &ldir)?;
                    false
                }
            };
            if !mounted && let Err(e) = mount_layer(h, image, &mnt) {
                let _ = fs::remove_file(&uf);
                return Err(e).with_context(|| format!("mount layer {} ({d})", h.label()));
            }
            return Ok(mnt);
        }
    }

    /// Write `users/<user>` (creating users/, which the last release removes before it
    /// unmounts and a crash can leave missing). Returns its path. Caller holds the lock.
    /// `make_dir`: create users/ first (a new layer directory), rather than on ENOENT.
    fn add_user(
        &self,
        dfd: BorrowedFd<'_>,
        d: &Digest,
        user: &str,
        user_dir: &Path,
        make_dir: bool,
    ) -> Result<PathBuf> {
        let ldir = self.layer_dir(d);
        let uf = ldir.join("users").join(user);
        let rel = format!("{}/users/{user}", d.hex());
        if make_dir {
            mkdirat_ok_if_exists(dfd, &format!("{}/users", d.hex()), &ldir)?;
        }
        let mut made_dir = make_dir;
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC;
        let fd = loop {
            match rustix::fs::openat(dfd, rel.as_str(), flags, Mode::from_raw_mode(0o666)) {
                Ok(fd) => break fd,
                // users/ missing: make it once and try again (the common case, users/
                // present, costs no mkdir).
                Err(Errno::NOENT) if !made_dir => {
                    mkdirat_ok_if_exists(dfd, &format!("{}/users", d.hex()), &ldir)?;
                    made_dir = true;
                }
                Err(e) => {
                    return Err(std::io::Error::from(e))
                        .with_context(|| format!("create {}", uf.display()));
                }
            }
        };
        let mut f = File::from(fd);
        f.write_all(user_dir.as_os_str().as_encoded_bytes())
            .with_context(|| format!("write {}", uf.display()))?;
        Ok(uf)
    }

    /// Drop `user`'s reference on `d` (if any); the last one leaves the layer idle (see
    /// `IdlePolicy`) or unmounts it and removes its directory. `@layers` itself is left for
    /// `remove_dir_if_empty`, once per batch.
    pub fn release(&self, d: &Digest, user: &str) -> Result<()> {
        let Some(_l) = self.lock(d, false, Kind::Exclusive)? else {
            // No lock file: no reference and no mount (see `lock`). A crash between a release's
            // unlink of the lock and its rmdir leaves an empty directory: remove it. An
            // acquirer that made it an instant ago retries (its openat sees ENOENT).
            if let Some(dfd) = self.dirfd(false)? {
                unlinkat(dfd.as_fd(), &d.hex(), AtFlags::REMOVEDIR).ok();
            }
            return Ok(());
        };
        let Some(dfd) = self.dirfd(false)? else {
            bail!("{} vanished while locked", self.dir.display());
        };
        let rel = format!("{}/users/{user}", d.hex());
        match unlinkat(dfd.as_fd(), &rel, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => {
                return Err(std::io::Error::from(e)).with_context(|| {
                    format!(
                        "remove {}",
                        self.layer_dir(d).join("users").join(user).display()
                    )
                });
            }
        }
        self.retire_if_unused(d, dfd.as_fd(), self.idle.keeps())
            .map(|_| ())
    }

    /// Unmount the idle layers the policy no longer keeps (all of them with `drop_all`):
    /// those idle for longer than its timeout, and beyond its count the least recently
    /// used. A layer someone is locking is skipped, never waited for: a create calls this.
    /// Returns how many were unmounted.
    pub fn sweep_idle(&self, drop_all: bool) -> Result<usize> {
        let Some(dfd) = self.dirfd(false)? else {
            return Ok(0);
        };
        let mut idle = Vec::new();
        for d in self.layers()? {
            if let Some(since) = idle_since(dfd.as_fd(), &d, &self.layer_dir(&d))? {
                idle.push((since, d));
            }
        }
        // Most recently used first: the count bound keeps those.
        idle.sort_by_key(|e| std::cmp::Reverse(e.0));
        let now = SystemTime::now();
        let mut unmounted = 0;
        for (i, (since, d)) in idle.iter().enumerate() {
            let age = now.duration_since(*since).unwrap_or_default();
            let keep =
                !drop_all && self.idle.keeps() && i < self.idle.max && age < self.idle.timeout;
            if keep {
                continue;
            }
            let lock_rel = format!("{}/lock", d.hex());
            let attempt =
                lockfile::try_lock_at(&*dfd, Path::new(&lock_rel), false, Kind::ExclusiveNow)
                    .with_context(|| format!("lock {}/lock", self.layer_dir(d).display()))?;
            let Attempt::Locked(_l) = attempt else {
                continue;
            };
            // Checked again under the lock: a create may have taken it meanwhile.
            if idle_since(dfd.as_fd(), d, &self.layer_dir(d))?.is_none() {
                continue;
            }
            if self.retire_if_unused(d, dfd.as_fd(), false)? {
                unmounted += 1;
            }
        }
        Ok(unmounted)
    }

    /// Remove `@layers` if nothing is left in it (fails harmlessly, ENOTEMPTY, when another
    /// process is using it: it recreates what it needs under its own lock).
    pub fn remove_dir_if_empty(&self) {
        *self.dirfd.borrow_mut() = None;
        let _ = fs::remove_dir(&self.dir);
    }

    /// With the layer lock held: if no reference remains, leave the layer idle (`keep`, and it
    /// is mounted) or unmount it and remove its directory. Returns whether a mount was removed.
    fn retire_if_unused(&self, d: &Digest, dfd: BorrowedFd<'_>, keep: bool) -> Result<bool> {
        let hex = d.hex();
        let ldir = self.layer_dir(d);
        // rmdir users/ decides "unused" in one call: ENOTEMPTY means a reference remains.
        // It also stamps `<hex>/` with the time the layer became idle.
        match unlinkat(dfd.as_fd(), &format!("{hex}/users"), AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(Errno::NOTEMPTY) | Err(Errno::EXIST) => return Ok(false),
            Err(e) => {
                return Err(std::io::Error::from(e))
                    .with_context(|| format!("rmdir {}/users", ldir.display()));
            }
        }
        let mnt = ldir.join("mnt");
        if keep && mount_root_at(dfd, &format!("{hex}/mnt"), &mnt)? == Some(true) {
            return Ok(false);
        }
        // Overlays built on the layer hold their own reference, and copies of this mount in
        // containers' namespaces do too: detach so neither can make the unmount fail; the
        // loop device frees itself (AUTOCLEAR) when the last of them goes. EINVAL (not a
        // mount point) and ENOENT (no mnt) replace a stat-based check.
        let unmounted =
            match nix::mount::umount2(&mnt, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
                Ok(()) => true,
                Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => false,
                Err(e) => return Err(e).with_context(|| format!("umount {}", mnt.display())),
            };
        match unlinkat(dfd.as_fd(), &format!("{hex}/mnt"), AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => {
                return Err(std::io::Error::from(e))
                    .with_context(|| format!("rmdir {}", mnt.display()));
            }
        }
        match unlinkat(dfd.as_fd(), &format!("{hex}/lock"), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => {
                return Err(std::io::Error::from(e))
                    .with_context(|| format!("remove {}/lock", ldir.display()));
            }
        }
        // Fails harmlessly (ENOTEMPTY) when another process is already back in: it recreates
        // what it needs under its own lock.
        let _ = unlinkat(dfd.as_fd(), &hex, AtFlags::REMOVEDIR);
        Ok(unmounted)
    }

    /// Digests with a layer directory.
    pub fn layers(&self) -> Result<Vec<Digest>> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("read {}", self.dir.display())),
        };
        let mut v: Vec<Digest> = rd
            .flatten()
            .filter_map(|e| Digest::parse(&e.file_name().to_string_lossy()).ok())
            .collect();
        v.sort();
        Ok(v)
    }

    /// Users of a layer: (user, recorded state dir).
    pub fn users(&self, d: &Digest) -> Result<Vec<(String, PathBuf)>> {
        let users = self.layer_dir(d).join("users");
        let rd = match fs::read_dir(&users) {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("read {}", users.display())),
        };
        let mut v = Vec::new();
        for e in rd.flatten() {
            // An unreadable reference is an error, never "stale": dropping it could unmount
            // a layer under a running container.
            let dir = fs::read(e.path())
                .with_context(|| format!("read layer reference {}", e.path().display()))?;
            let dir = PathBuf::from(String::from_utf8_lossy(&dir).into_owned());
            v.push((e.file_name().to_string_lossy().into_owned(), dir));
        }
        v.sort();
        Ok(v)
    }

    /// Drop references `is_live` rejects, leave what nobody uses idle (or unmount it, as the
    /// policy says), then sweep the idle layers (all of them with `drop_idle`). Returns (stale
    /// references removed, mounts removed, digests still in use).
    pub fn sweep(
        &self,
        is_live: &dyn Fn(&Digest, &Path) -> bool,
        drop_idle: bool,
    ) -> Result<(usize, usize, Vec<Digest>)> {
        let (mut stale, mut unmounted, mut live) = (0, 0, Vec::new());
        for d in self.layers()? {
            let Some(_l) = self.lock(&d, true, Kind::Exclusive)? else {
                continue;
            };
            let Some(dfd) = self.dirfd(false)? else {
                continue;
            };
            for (user, dir) in self.users(&d)? {
                if !is_live(&d, &dir) {
                    crate::utils::remove_file_if_exists(
                        &self.layer_dir(&d).join("users").join(&user),
                    )?;
                    stale += 1;
                }
            }
            if self.retire_if_unused(&d, dfd.as_fd(), self.idle.keeps())? {
                unmounted += 1;
            }
            if !self.users(&d)?.is_empty() {
                live.push(d);
            }
        }
        unmounted += self.sweep_idle(drop_idle)?;
        self.remove_dir_if_empty();
        Ok((stale, unmounted, live))
    }
}

/// When layer `d` became idle (the mtime of `<hex>/`), or `None` if it is not idle: it has
/// a `users/` directory (references, or a release that has not finished), or no directory.
fn idle_since(dfd: BorrowedFd<'_>, d: &Digest, ldir: &Path) -> Result<Option<SystemTime>> {
    let hex = d.hex();
    let statx = |rel: &str| {
        rustix::fs::statx(
            dfd,
            rel,
            AtFlags::SYMLINK_NOFOLLOW | AtFlags::STATX_DONT_SYNC,
            StatxFlags::MTIME,
        )
    };
    match statx(&format!("{hex}/users")) {
        Ok(_) => return Ok(None),
        Err(Errno::NOENT) => {}
        Err(e) => {
            return Err(std::io::Error::from(e))
                .with_context(|| format!("statx {}/users", ldir.display()));
        }
    }
    let st = match statx(&hex) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => {
            return Err(std::io::Error::from(e))
                .with_context(|| format!("statx {}", ldir.display()));
        }
    };
    let t = Duration::new(
        u64::try_from(st.stx_mtime.tv_sec).unwrap_or(0),
        st.stx_mtime.tv_nsec,
    );
    Ok(Some(SystemTime::UNIX_EPOCH + t))
}

fn create_private_dir(p: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new().mode(0o700).create(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            // The state root itself is missing: create it, the layers dir private (setuid
            // programs inside layers must not be reachable by host users).
            fs::create_dir_all(p.parent().unwrap_or(p))
                .with_context(|| format!("create {}", p.display()))?;
            create_private_dir(p)
        }
        Err(e) => Err(e).with_context(|| format!("create {}", p.display())),
    }
}

/// unlinkat relative to `dfd`.
fn unlinkat(dfd: BorrowedFd<'_>, rel: &str, flags: AtFlags) -> rustix::io::Result<()> {
    rustix::fs::unlinkat(dfd, rel, flags)
}

/// mkdirat relative to `dfd`, an existing directory being fine; `ldir` names it in errors.
fn mkdirat_ok_if_exists(dfd: BorrowedFd<'_>, rel: &str, ldir: &Path) -> Result<()> {
    match rustix::fs::mkdirat(dfd, rel, Mode::from_raw_mode(0o777)) {
        Ok(()) | Err(Errno::EXIST) => Ok(()),
        Err(e) => Err(std::io::Error::from(e)).with_context(|| {
            let name = rel.rsplit('/').next().unwrap_or(rel);
            format!("create {}", ldir.join(name).display())
        }),
    }
}

/// Whether `rel` (under `dfd`) is the root of a mount: `None` if it does not exist. One
/// statx with `STATX_ATTR_MOUNT_ROOT`; kernels without it (< 5.8) compare st_dev with the
/// parent's, as `is_mount_point` does.
fn mount_root_at(dfd: BorrowedFd<'_>, rel: &str, full: &Path) -> Result<Option<bool>> {
    let st = match rustix::fs::statx(
        dfd,
        rel,
        AtFlags::SYMLINK_NOFOLLOW | AtFlags::STATX_DONT_SYNC,
        StatxFlags::TYPE,
    ) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => {
            return Err(std::io::Error::from(e))
                .with_context(|| format!("statx {}", full.display()));
        }
    };
    if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) {
        return Ok(Some(
            st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT),
        ));
    }
    let parent = full.parent().unwrap_or(full);
    is_mount_point(full, parent).map(Some)
}

/// Whether `p` is the root of a mount other than its parent's.
pub fn is_mount_point(p: &Path, parent: &Path) -> Result<bool> {
    let a = match fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("stat {}", p.display())),
    };
    let b = fs::symlink_metadata(parent).with_context(|| format!("stat {}", parent.display()))?;
    Ok(a.dev() != b.dev())
}

/// Set once the kernel refused a file-backed erofs mount, so a process mounting many layers
/// pays for the failed attempt once.
static NO_FILE_BACKED: AtomicBool = AtomicBool::new(false);

/// Whether file-backed erofs mounts should be tried (env LRUN_EROFS_BACKING=loop turns them
/// off, for measurement and for kernels whose file-backed erofs misbehaves).
fn prefer_file_backed() -> bool {
    !NO_FILE_BACKED.load(Ordering::Relaxed)
        && std::env::var_os("LRUN_EROFS_BACKING").is_none_or(|v| v != "loop")
}

fn mount_layer(h: &Header, image: &Path, mnt: &Path) -> Result<Backing> {
    if h.fs == FsType::Erofs && prefer_file_backed() {
        let data = format!("fsoffset={}", h.payload_offset);
        match nix::mount::mount(
            Some(image),
            mnt,
            Some("erofs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
            Some(data.as_str()),
        ) {
            Ok(()) => return Ok(Backing::File),
            // ENOTBLK: kernel without file-backed erofs (< 6.12); EINVAL: no fsoffset
            // (< 6.16). Both are served by a loop device with an offset.
            // Only ENOTBLK is cached: EINVAL may also mean a corrupt image, which must not
            // turn file-backed mounts off for the other layers.
            Err(nix::errno::Errno::ENOTBLK) => NO_FILE_BACKED.store(true, Ordering::Relaxed),
            Err(nix::errno::Errno::EINVAL) => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "mount erofs {} ({data}) on {}",
                        image.display(),
                        mnt.display()
                    )
                });
            }
        }
    }
    let backing: OwnedFd = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(image)
        .with_context(|| format!("open {}", image.display()))?
        .into();
    let dev = loopdev::attach(&backing, image, h.payload_offset, h.payload_len)?;
    nix::mount::mount(
        Some(&dev.path),
        mnt,
        Some(h.fs.name()),
        MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .with_context(|| {
        format!(
            "mount {} {} ({}) on {}",
            h.fs.name(),
            dev.path.display(),
            image.display(),
            mnt.display()
        )
    })?;
    // `dev` drops here: the mount now holds the device; AUTOCLEAR detaches it with the mount.
    Ok(Backing::Loop)
}
