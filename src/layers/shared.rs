//! Each layer mounted once per node, shared by every container stacked on it.
//!
//! ```text
//! ROOT/@layers/<hex>/lock         flock: every change below is made holding it
//! ROOT/@layers/<hex>/mnt          the layer's read-only mount
//! ROOT/@layers/<hex>/users/<id>   one file per container holding a reference; content: the
//!                                 container's state dir
//! ```
//! The reference count is the number of files in users/, so it cannot drift: a process that
//! dies leaves at most its own file, which `release_root` (re-run by delete) or `gc` removes.
//! '@' is not allowed in container ids, so the directory can never be mistaken for one.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use nix::mount::{MntFlags, MsFlags};

use super::header::{Digest, FsType, Header};
use super::loopdev;

pub const DIR_NAME: &str = "@layers";

pub struct Shared {
    pub dir: PathBuf,
}

/// An exclusive flock on one layer's lock file.
struct LayerLock {
    _f: File,
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
    pub fn new(state_root: &Path) -> Shared {
        Shared {
            dir: state_root.join(DIR_NAME),
        }
    }

    pub fn layer_dir(&self, d: &Digest) -> PathBuf {
        self.dir.join(d.hex())
    }

    pub fn mount_point(&self, d: &Digest) -> PathBuf {
        self.layer_dir(d).join("mnt")
    }

    fn lock(&self, d: &Digest) -> Result<LayerLock> {
        let dir = self.layer_dir(d);
        let path = dir.join("lock");
        // Whoever empties a layer directory deletes its lock file while holding it; a waiter
        // that then gets the lock on the deleted inode must start over, or two processes
        // could each hold "the" lock on different inodes.
        loop {
            create_private_dir(&self.dir)?;
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                // The last release removed @layers itself between our two mkdirs.
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("create {}", dir.display())),
            }
            let f = match OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
            {
                Ok(f) => f,
                // Removed between our mkdir and open by a releasing process: retry.
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("open {}", path.display())),
            };
            // SAFETY: flock on an fd we own.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("flock {}", path.display()));
            }
            let held = f
                .metadata()
                .with_context(|| format!("fstat {}", path.display()))?;
            match fs::metadata(&path) {
                Ok(m) if m.ino() == held.ino() && m.dev() == held.dev() => {
                    return Ok(LayerLock { _f: f });
                }
                _ => continue,
            }
        }
    }

    /// Take `user`'s reference on layer `d`, mounting it if no one has. Returns the mount
    /// point. The reference file is written before the mount so a crash in between leaves
    /// a reference that release/gc will find and drop (and then unmount).
    pub fn acquire(
        &self,
        d: &Digest,
        h: &Header,
        image: &Path,
        user: &str,
        user_dir: &Path,
    ) -> Result<PathBuf> {
        let _l = self.lock(d)?;
        let ldir = self.layer_dir(d);
        let users = ldir.join("users");
        mkdir_ok_if_exists(&users)?;
        let uf = users.join(user);
        fs::write(&uf, user_dir.as_os_str().as_encoded_bytes())
            .with_context(|| format!("write {}", uf.display()))?;
        let mnt = ldir.join("mnt");
        mkdir_ok_if_exists(&mnt)?;
        if !is_mount_point(&mnt, &ldir)?
            && let Err(e) = mount_layer(h, image, &mnt)
        {
            let _ = fs::remove_file(&uf);
            return Err(e).with_context(|| format!("mount layer {} ({d})", h.label()));
        }
        Ok(mnt)
    }

    /// Drop `user`'s reference on `d` (if any); the last one unmounts the layer and removes
    /// its directory.
    pub fn release(&self, d: &Digest, user: &str) -> Result<()> {
        if !self.layer_dir(d).exists() {
            return Ok(());
        }
        let _l = self.lock(d)?;
        let uf = self.layer_dir(d).join("users").join(user);
        crate::utils::remove_file_if_exists(&uf)?;
        self.unmount_if_unused(d).map(|_| ())
    }

    /// With the layer lock held: if no reference remains, unmount and remove the directory.
    /// Returns whether a mount was removed.
    fn unmount_if_unused(&self, d: &Digest) -> Result<bool> {
        let ldir = self.layer_dir(d);
        let users = ldir.join("users");
        let in_use = match fs::read_dir(&users) {
            Ok(mut rd) => rd.next().is_some(),
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            Err(e) => return Err(e).with_context(|| format!("read {}", users.display())),
        };
        if in_use {
            return Ok(false);
        }
        let mnt = ldir.join("mnt");
        let mut unmounted = false;
        if mnt.exists() && is_mount_point(&mnt, &ldir)? {
            // Overlays built on the layer hold their own reference, and copies of this mount in
            // containers' namespaces do too: detach so neither can make the unmount fail; the
            // loop device frees itself (AUTOCLEAR) when the last of them goes.
            nix::mount::umount2(&mnt, MntFlags::MNT_DETACH)
                .with_context(|| format!("umount {}", mnt.display()))?;
            unmounted = true;
        }
        for p in [&mnt, &users] {
            match fs::remove_dir(p) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("rmdir {}", p.display())),
            }
        }
        crate::utils::remove_file_if_exists(&ldir.join("lock"))?;
        // Both fail harmlessly (ENOTEMPTY) when another process is already back in: it
        // recreates what it needs under its own lock.
        let _ = fs::remove_dir(&ldir);
        let _ = fs::remove_dir(&self.dir);
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
            let dir = fs::read(e.path()).unwrap_or_default();
            let dir = PathBuf::from(String::from_utf8_lossy(&dir).into_owned());
            v.push((e.file_name().to_string_lossy().into_owned(), dir));
        }
        v.sort();
        Ok(v)
    }

    /// Drop references `is_live` rejects, then unmount what nobody uses. Returns (stale
    /// references removed, mounts removed, digests still in use).
    pub fn sweep(
        &self,
        is_live: &dyn Fn(&Digest, &Path) -> bool,
    ) -> Result<(usize, usize, Vec<Digest>)> {
        let (mut stale, mut unmounted, mut live) = (0, 0, Vec::new());
        for d in self.layers()? {
            let _l = self.lock(&d)?;
            for (user, dir) in self.users(&d)? {
                if !is_live(&d, &dir) {
                    crate::utils::remove_file_if_exists(
                        &self.layer_dir(&d).join("users").join(&user),
                    )?;
                    stale += 1;
                }
            }
            if self.unmount_if_unused(&d)? {
                unmounted += 1;
            }
            if !self.users(&d)?.is_empty() {
                live.push(d);
            }
        }
        Ok((stale, unmounted, live))
    }
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

fn mkdir_ok_if_exists(p: &Path) -> Result<()> {
    match fs::create_dir(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("create {}", p.display())),
    }
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

/// Reject before mounting what the kernel would only report vaguely.
pub fn check_stack_depth(n: usize) -> Result<()> {
    if n > super::closure::MAX_LAYERS {
        bail!(
            "{n} layers: overlayfs stacks at most {}",
            super::closure::MAX_LAYERS
        );
    }
    Ok(())
}
