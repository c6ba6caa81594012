//! The container's root filesystem, set up by the init process inside its mount namespace:
//! propagation, the rootfs bind, `mounts`, devices, then pivot_root, masked and read-only
//! paths. Every path from config.json is resolved inside the rootfs (see `resolve`).

pub mod devices;
pub mod mounts;
pub mod resolve;

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::unistd::{chdir, chroot, fchdir, pivot_root};
use oci_spec::runtime::Spec;

use mounts::{CgroupMounter, mount_entry, propagation_flag, remount_bind};
use resolve::{fd_path, open_in_root};

/// Everything up to (not including) pivot_root. Runs in the new mount namespace.
pub fn prepare(
    spec: &Spec,
    bundle: &Path,
    rootfs: &Path,
    in_userns: bool,
    notify_dir: Option<&Path>,
    before_cgroup_mounts: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    let linux = spec.linux().as_ref();
    // Mounts made below must not propagate back to the host: make everything a slave (or what
    // rootfsPropagation asks) first.
    let prop = linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .unwrap_or("rslave");
    let root_prop = match prop {
        // Shared is applied to the container's root after pivot_root; the host side stays slave.
        "shared" | "rshared" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        p => {
            propagation_flag(p)
                .with_context(|| format!("linux.rootfsPropagation: unknown value {p:?}"))?
                | MsFlags::MS_REC
        }
    };
    mount(None::<&str>, "/", None::<&str>, root_prop, None::<&str>)
        .context("set propagation of / (linux.rootfsPropagation)")?;

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
    for m in spec.mounts().iter().flatten() {
        let mut cgroup_mounter = None;
        if m.typ().as_deref() == Some("cgroup") {
            // Needs the container's final cgroup (and cgroup namespace).
            before_cgroup_mounts()?;
            cgroup_mounter =
                Some(&*cgroups.get_or_insert_with(|| CgroupMounter::from_host(cgroupns)));
        }
        mount_entry(root.as_fd(), bundle, m, cgroup_mounter)?;
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
        devices::create(root.as_fd(), &devices::from_spec(d), in_userns)?;
    }
    devices::create_symlinks(root.as_fd(), has_dev_pts)?;
    if let Some(dir) = notify_dir {
        let target = resolve::ensure_in_root(
            root.as_fd(),
            Path::new(crate::notify::CONTAINER_DIR),
            resolve::Kind::Dir,
        )?;
        mount(
            Some(dir),
            fd_path(&target).as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .context("bind the notify socket directory")?;
    }
    Ok(())
}

/// Make `rootfs` the root: pivot_root (or MS_MOVE + chroot with `--no-pivot`).
pub fn enter(rootfs: &Path, no_pivot: bool) -> Result<()> {
    let root = File::open(rootfs).with_context(|| format!("open rootfs {}", rootfs.display()))?;
    fchdir(root.as_fd()).context("chdir into rootfs")?;
    if no_pivot {
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

/// After pivot_root: masked and read-only paths, root propagation and root.readonly.
pub fn finalize(spec: &Spec) -> Result<()> {
    let root = File::open("/").context("open /")?;
    if let Some(linux) = spec.linux() {
        for p in linux.masked_paths().iter().flatten() {
            mask(&root, Path::new(p)).with_context(|| format!("linux.maskedPaths: {p}"))?;
        }
        for p in linux.readonly_paths().iter().flatten() {
            readonly(&root, Path::new(p)).with_context(|| format!("linux.readonlyPaths: {p}"))?;
        }
        if let Some(p) = linux
            .rootfs_propagation()
            .as_deref()
            .filter(|p| p.contains("shared"))
        {
            let f = propagation_flag(p).unwrap_or(MsFlags::MS_SHARED);
            mount(None::<&str>, "/", None::<&str>, f, None::<&str>)
                .context("linux.rootfsPropagation")?;
        }
    }
    if spec
        .root()
        .as_ref()
        .is_some_and(|r| r.readonly() == Some(true))
    {
        remount_bind("/", MsFlags::MS_RDONLY, MsFlags::empty()).context("root.readonly")?;
    }
    Ok(())
}

fn mask(root: &File, path: &Path) -> Result<()> {
    let fd = match open_in_root(root.as_fd(), path) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let target = fd_path(&fd);
    if std::fs::metadata(&target).is_ok_and(|m| m.is_dir()) {
        mount(
            Some("tmpfs"),
            target.as_str(),
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0"),
        )
        .context("mount an empty tmpfs over it")?;
    } else {
        mount(
            Some("/dev/null"),
            target.as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .context("bind /dev/null over it")?;
    }
    Ok(())
}

fn readonly(root: &File, path: &Path) -> Result<()> {
    let fd = match open_in_root(root.as_fd(), path) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let target = fd_path(&fd);
    mount(
        Some(target.as_str()),
        target.as_str(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .context("bind onto itself")?;
    let fresh = open_in_root(root.as_fd(), path)?;
    remount_bind(
        &fd_path(&fresh),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        MsFlags::empty(),
    )
}

/// Check a rootfs directory exists before anything is created for it.
pub fn check_exists(rootfs: &Path) -> Result<()> {
    match std::fs::metadata(rootfs) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bail!("root.path {}: not a directory", rootfs.display()),
        Err(e) => Err(e).with_context(|| format!("root.path {}", rootfs.display())),
    }
}
