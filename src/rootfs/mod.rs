//! The container's root filesystem, set up by the init process inside its mount namespace:
//! propagation, the rootfs bind, `mounts`, devices, then pivot_root, masked and read-only
//! paths. Every path from config.json is cleaned lexically and resolved inside the rootfs (see
//! `resolve`); every mount is built detached and attached to the target held open (see
//! `fdmount`).

mod copyup;
pub mod devices;
pub(crate) mod fdmount;
pub mod mounts;
pub mod resolve;

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{SFlag, makedev};
use nix::unistd::{chdir, chroot, fchdir, pivot_root};
use oci_spec::runtime::Spec;

use mounts::{CgroupMounter, bind_host_path, make_readonly, mount_entry, propagation_flag};
use resolve::open_in_root;

/// A host directory lrun itself bind-mounts into the container (the notify socket's): the
/// engine says which, rootfs only mounts it.
pub struct HostDir<'a> {
    pub host: &'a Path,
    pub container: &'a Path,
    /// For errors: "bind the {what} directory".
    pub what: &'a str,
}

/// The container's root: a directory, and the mount to attach there first if the runtime
/// built one detached (a layered root, `layers::LayeredRoot`).
pub struct Root<'a> {
    pub path: &'a Path,
    pub detached: Option<BorrowedFd<'a>>,
}

/// Everything up to (not including) pivot_root. Runs in the new mount namespace.
pub fn prepare(
    spec: &Spec,
    bundle: &Path,
    new_root: &Root,
    in_userns: bool,
    host_dir: Option<&HostDir>,
    bind_sources: &[Option<OwnedFd>],
    before_cgroup_mounts: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    let rootfs = new_root.path;
    let linux = spec.linux().as_ref();
    // Mounts made below must not propagate back to the host: make everything a slave (or what
    // rootfsPropagation asks) first.
    let prop = linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .unwrap_or("rslave");
    let root_prop = match prop {
        // Shared and unbindable are applied to the container's root after pivot_root (as runc
        // does): an unbindable / could not be bind-mounted onto itself below, and a shared one
        // would propagate back to the host. Until then the host side stays slave.
        "shared" | "rshared" | "unbindable" | "runbindable" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        p => {
            propagation_flag(p)
                .with_context(|| format!("linux.rootfsPropagation: unknown value {p:?}"))?
                | MsFlags::MS_REC
        }
    };
    mount(None::<&str>, "/", None::<&str>, root_prop, None::<&str>)
        .context("set propagation of / (linux.rootfsPropagation)")?;
    // A layered root the runtime built detached: attached here, after the propagation change,
    // so that it exists in this namespace only (never propagates to the host's).
    if let Some(m) = new_root.detached {
        rustix::mount::move_mount(
            m,
            "",
            rustix::fs::CWD,
            rootfs,
            rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(std::io::Error::from)
        .with_context(|| format!("attach the layered root at {}", rootfs.display()))?;
    }

    // pivot_root needs the new root to be a mount point.
    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("bind mount rootfs {}", rootfs.display()))?;
    let root = File::open(rootfs).with_context(|| format!("open rootfs {}", rootfs.display()))?;

    let cgroupns = linux
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|v| {
            v.iter()
                .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Cgroup)
        });
    let mut cgroups = None;
    let mut has_dev_pts = false;
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let mut cgroup_mounter = None;
        if m.typ().as_deref() == Some("cgroup") {
            // Needs the container's final cgroup (and cgroup namespace).
            before_cgroup_mounts()?;
            if cgroups.is_none() {
                cgroups = Some(CgroupMounter::from_host(cgroupns)?);
            }
            cgroup_mounter = cgroups.as_ref();
        }
        let label = linux.and_then(|l| l.mount_label().as_deref());
        let source = bind_sources
            .get(i)
            .and_then(|s| s.as_ref())
            .map(|s| s.as_fd());
        mount_entry(root.as_fd(), bundle, m, cgroup_mounter, label, source)?;
        has_dev_pts |= m.destination() == Path::new("/dev/pts");
    }

    for d in devices::defaults() {
        devices::create(root.as_fd(), &d, in_userns)?;
    }
    for d in linux
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
    {
        devices::create_listed(root.as_fd(), &devices::from_spec(d), in_userns)?;
    }
    devices::create_symlinks(root.as_fd(), has_dev_pts)?;
    if let Some(d) = host_dir {
        let target = resolve::ensure_in_root(root.as_fd(), d.container, resolve::Kind::Dir)?;
        bind_host_path(d.host, target.as_fd())
            .with_context(|| format!("bind the {} directory", d.what))?;
    }
    Ok(())
}

/// Make `rootfs` the root: pivot_root (or MS_MOVE + chroot with `--no-pivot`).
pub fn enter(rootfs: &Path, no_pivot: bool) -> Result<()> {
    let root = File::open(rootfs).with_context(|| format!("open rootfs {}", rootfs.display()))?;
    fchdir(root.as_fd()).context("chdir into rootfs")?;
    if no_pivot {
        detach_outside(rootfs)?;
        mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
            .context("move rootfs to /")?;
        chroot(".").context("chroot into rootfs")?;
    } else {
        // Stack the old root on top of the new one, then detach it: no temporary directory
        // inside the rootfs is needed.
        pivot_root(".", ".").context("pivot_root")?;
        mount(
            None::<&str>,
            ".",
            None::<&str>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&str>,
        )
        .context("make the old root a slave")?;
        umount2(".", MntFlags::MNT_DETACH).context("detach the old root")?;
    }
    chdir("/").context("chdir /")?;
    Ok(())
}

/// Without a mount namespace of its own (it shares the caller's): chroot, no mount at all.
pub fn chroot_into(rootfs: &Path) -> Result<()> {
    let root = File::open(rootfs).with_context(|| format!("open rootfs {}", rootfs.display()))?;
    fchdir(root.as_fd()).context("chdir into rootfs")?;
    chroot(".").context("chroot into rootfs")?;
    chdir("/").context("chdir /")?;
    Ok(())
}

/// Without pivot_root the old root stays in the mount namespace under the new one: a full
/// procfs or sysfs mount there lets a process in a new user namespace mount proc again
/// without the masked paths (the kernel allows it when one fully visible instance exists).
/// As runc's msMoveRoot, but for every mount: detach all that are neither the rootfs, below
/// it, nor above it (those hold the rootfs); cover what cannot be detached with a tmpfs.
fn detach_outside(rootfs: &Path) -> Result<()> {
    let rootfs = std::fs::canonicalize(rootfs)
        .with_context(|| format!("--no-pivot: resolve rootfs {}", rootfs.display()))?;
    let text = crate::mountinfo::read_self().context("--no-pivot")?;
    // Children come after their parents in mountinfo: walk backwards so each path still
    // reaches the mount it names when it is detached.
    let points: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(crate::mountinfo::unescape(p)))
        .collect();
    for p in points.iter().rev() {
        if p.starts_with(&rootfs) || rootfs.starts_with(p) {
            continue;
        }
        // prepare() made every mount a slave (or private): unmounts do not reach the host.
        // Not following a last-component symlink a host user could have put there.
        match umount2(p, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) | Err(Errno::ENOENT) => {}
            // Locked in a user namespace: make it unreachable instead.
            Err(Errno::EPERM) | Err(Errno::EINVAL) => {
                if std::fs::metadata(p).is_ok_and(|m| m.is_dir()) {
                    mount(
                        Some("tmpfs"),
                        p,
                        Some("tmpfs"),
                        MsFlags::MS_RDONLY,
                        Some("size=0"),
                    )
                    .with_context(|| format!("--no-pivot: cover {}", p.display()))?;
                }
            }
            Err(e) => return Err(e).with_context(|| format!("--no-pivot: detach {}", p.display())),
        }
    }
    Ok(())
}

/// After pivot_root: masked and read-only paths, root propagation and root.readonly.
pub fn finalize(spec: &Spec) -> Result<()> {
    let root = File::open("/").context("open /")?;
    if let Some(linux) = spec.linux() {
        let mut null = None;
        for p in linux.masked_paths().iter().flatten() {
            mask(
                &root,
                Path::new(p),
                &mut null,
                linux.mount_label().as_deref(),
            )
            .with_context(|| format!("linux.maskedPaths: {p}"))?;
        }
        for p in linux.readonly_paths().iter().flatten() {
            readonly(&root, Path::new(p)).with_context(|| format!("linux.readonlyPaths: {p}"))?;
        }
        if let Some(p) = linux
            .rootfs_propagation()
            .as_deref()
            .filter(|p| p.contains("shared") || p.contains("unbindable"))
        {
            let f = propagation_flag(p).context("linux.rootfsPropagation")?;
            mount(None::<&str>, "/", None::<&str>, f, None::<&str>)
                .context("linux.rootfsPropagation")?;
        }
    }
    if spec.mounts().iter().flatten().any(mounts::is_readonly_dev) {
        // Mounted writable for its devices and /dev/pts (runc's finalizeRootfs does the same).
        let dev = open_in_root(root.as_fd(), Path::new("/dev")).context("open /dev")?;
        mounts::make_mount_readonly(dev.as_fd()).context("remount /dev read-only")?;
    }
    if spec
        .root()
        .as_ref()
        .is_some_and(|r| r.readonly() == Some(true))
    {
        make_readonly(&root).context("root.readonly")?;
    }
    Ok(())
}

/// The container's /dev/null, checked to be the null device (char 1:3). The image controls
/// that path: a symlink or a regular file there would turn every "masked" file into a bind
/// of whatever it names (CVE-2025-31133). The fd checked is the one bound.
fn open_null(root: &File) -> Result<OwnedFd> {
    let fd = open_in_root(root.as_fd(), Path::new("/dev/null"))
        .context("open /dev/null in the container")?;
    let st = nix::sys::stat::fstat(&fd).context("fstat /dev/null in the container")?;
    let is_char = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR;
    if !is_char || st.st_rdev != makedev(1, 3) {
        bail!(
            "/dev/null in the container is not the null device (char 1:3): refusing to mask with it"
        );
    }
    Ok(fd)
}

fn mask(
    root: &File,
    path: &Path,
    null: &mut Option<OwnedFd>,
    mount_label: Option<&str>,
) -> Result<()> {
    let fd = match open_in_root(root.as_fd(), path) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let is_dir = nix::sys::stat::fstat(&fd)
        .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR);
    let tree = if is_dir {
        let ro = fdmount::Attrs {
            set: fdmount::ATTR_RDONLY,
            clear: 0,
        };
        let mut data = vec!["size=0".to_string()];
        data.extend(crate::lsm::mount_context(mount_label, "tmpfs", &data));
        fdmount::new_fs("tmpfs", "tmpfs", &data, &["ro"], ro)
            .context("mount an empty tmpfs over it")?
    } else {
        let null = match null {
            Some(n) => n,
            None => null.insert(open_null(root)?),
        };
        fdmount::clone_fd(null.as_fd(), false).context("bind /dev/null over it")?
    };
    fdmount::attach(tree.as_fd(), fd.as_fd())
}

fn readonly(root: &File, path: &Path) -> Result<()> {
    let fd = match open_in_root(root.as_fd(), path) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    // A read-only copy of exactly what was opened, stacked onto it.
    let tree = fdmount::clone_fd(fd.as_fd(), true).context("bind onto itself")?;
    let attrs = fdmount::Attrs {
        set: fdmount::ATTR_RDONLY
            | fdmount::ATTR_NOSUID
            | fdmount::ATTR_NODEV
            | fdmount::ATTR_NOEXEC,
        clear: 0,
    };
    fdmount::set_attrs(tree.as_fd(), attrs, false)?;
    fdmount::attach(tree.as_fd(), fd.as_fd())
}

/// Check a rootfs directory exists before anything is created for it.
pub fn check_exists(rootfs: &Path) -> Result<()> {
    match std::fs::metadata(rootfs) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bail!("root.path {}: not a directory", rootfs.display()),
        Err(e) => Err(e).with_context(|| format!("root.path {}", rootfs.display())),
    }
}
