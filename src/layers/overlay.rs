//! Stacking layer mounts with overlayfs.
//!
//! The new mount API is used because the legacy mount(2) data is limited to one page, which
//! ~50 layers with absolute paths exceed; `lowerdir+` (Linux 6.8) appends one layer per call,
//! each value under the 256-byte fsconfig limit, so stacks up to the 500-layer limit work.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

use super::header::MAX_LAYERS;
use rustix::fs::CWD;
use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, fsconfig_create,
    fsconfig_set_string, fsmount, fsopen, move_mount,
};

/// The writable part of a stack.
pub struct Upper<'a> {
    pub upper: &'a Path,
    pub work: &'a Path,
}

/// Mount the overlay of `lowers` (top-most first) with an optional upper on `target`.
pub fn mount(lowers: &[PathBuf], upper: Option<Upper<'_>>, target: &Path) -> Result<()> {
    match build_detached(lowers, upper.as_ref())? {
        Some(m) => attach(&m, target),
        None => mount_legacy(lowers, upper.as_ref(), target),
    }
}

/// Build the overlay of `lowers` (top-most first) with an optional upper as a detached mount,
/// attached nowhere yet: the caller attaches it (`attach`) where it is needed, e.g. only in
/// the container's own mount namespace, so the runtime's mount table never lists it. `None`
/// when the kernel lacks `lowerdir+` (before 6.8): then only `mount` (legacy API) can do it.
pub fn build_detached(lowers: &[PathBuf], upper: Option<&Upper<'_>>) -> Result<Option<OwnedFd>> {
    check_stack_depth(lowers.len())?;
    if lowers.is_empty() {
        bail!("no layers to stack");
    }
    // overlayfs wants two lower layers when there is no upper; one read-only layer needs no
    // overlay at all.
    if upper.is_none() && lowers.len() == 1 {
        return bind_readonly(&lowers[0]).map(Some);
    }
    match build_new_api(lowers, upper) {
        Ok(m) => Ok(Some(m)),
        Err(NewApiError::Unsupported) => Ok(None),
        Err(NewApiError::Failed(e)) => Err(e),
    }
}

/// Attach a mount from `build_detached` on `target` (in the caller's mount namespace).
pub fn attach(m: &OwnedFd, target: &Path) -> Result<()> {
    move_mount(
        m.as_fd(),
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(std::io::Error::from)
    .with_context(|| format!("move_mount the layered root to {}", target.display()))
}

/// The fallback for kernels before 6.8, callable directly so it can be tested on newer ones.
pub fn mount_legacy_api(lowers: &[PathBuf], upper: Option<Upper<'_>>, target: &Path) -> Result<()> {
    check_stack_depth(lowers.len())?;
    mount_legacy(lowers, upper.as_ref(), target)
}

/// Reject before mounting what the kernel would only report vaguely.
fn check_stack_depth(n: usize) -> Result<()> {
    if n > MAX_LAYERS {
        bail!("{n} layers: overlayfs stacks at most {MAX_LAYERS}");
    }
    Ok(())
}

enum NewApiError {
    /// fsopen or `lowerdir+` unknown: an older kernel.
    Unsupported,
    Failed(anyhow::Error),
}

/// The kernel explains fsconfig failures in the fs context's log ("e overlay: ..."); read it
/// so the user sees the reason rather than a bare EINVAL.
fn kernel_log(fd: &OwnedFd) -> String {
    let mut msgs = Vec::new();
    let mut f = std::fs::File::from(match fd.try_clone() {
        Ok(f) => f,
        Err(_) => return String::new(),
    });
    let mut buf = [0u8; 1024];
    // Each read returns one message; ENODATA ends the log.
    while let Ok(n) = f.read(&mut buf) {
        if n == 0 {
            break;
        }
        msgs.push(String::from_utf8_lossy(&buf[..n]).trim().to_string());
    }
    if msgs.is_empty() {
        String::new()
    } else {
        format!(" (kernel: {})", msgs.join("; "))
    }
}

fn build_new_api(
    lowers: &[PathBuf],
    upper: Option<&Upper<'_>>,
) -> std::result::Result<OwnedFd, NewApiError> {
    let fs = match fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) {
        Ok(fd) => fd,
        Err(Errno::NOSYS) => return Err(NewApiError::Unsupported),
        Err(e) => {
            return Err(NewApiError::Failed(
                anyhow!(std::io::Error::from(e)).context("fsopen overlay"),
            ));
        }
    };
    let fail = |what: String, e: Errno| {
        NewApiError::Failed(anyhow!(
            "{what}: {}{}",
            std::io::Error::from(e),
            kernel_log(&fs)
        ))
    };
    for (i, l) in lowers.iter().enumerate() {
        if let Err(e) = fsconfig_set_string(fs.as_fd(), "lowerdir+", l.as_path()) {
            // Before 6.8 the key does not exist: the first call tells us.
            if i == 0 && e == Errno::INVAL {
                let _ = kernel_log(&fs);
                return Err(NewApiError::Unsupported);
            }
            return Err(fail(format!("overlay lowerdir+ {}", l.display()), e));
        }
    }
    if let Some(u) = upper {
        fsconfig_set_string(fs.as_fd(), "upperdir", u.upper)
            .map_err(|e| fail(format!("overlay upperdir {}", u.upper.display()), e))?;
        fsconfig_set_string(fs.as_fd(), "workdir", u.work)
            .map_err(|e| fail(format!("overlay workdir {}", u.work.display()), e))?;
    }
    fsconfig_create(fs.as_fd()).map_err(|e| fail("create overlay".into(), e))?;
    let attrs = if upper.is_some() {
        MountAttrFlags::empty()
    } else {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    };
    fsmount(fs.as_fd(), FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .map_err(|e| fail("fsmount overlay".into(), e))
}

/// A detached read-only bind of one layer mount (a clone: the layer's own mount is shared by
/// every container that uses it and must not change).
fn bind_readonly(src: &Path) -> Result<OwnedFd> {
    let m = crate::rootfs::fdmount::clone_path(src, false)?;
    let ro = crate::rootfs::fdmount::Attrs {
        set: crate::rootfs::fdmount::ATTR_RDONLY,
        clear: 0,
    };
    crate::rootfs::fdmount::set_attrs(m.as_fd(), ro, false)
        .with_context(|| format!("make the bind of {} read-only", src.display()))?;
    Ok(m)
}

fn legacy_options(lowers: &[PathBuf], upper: Option<&Upper<'_>>) -> Result<String> {
    let mut s = String::from("lowerdir=");
    for (i, l) in lowers.iter().enumerate() {
        let p = l
            .to_str()
            .with_context(|| format!("layer path {} is not UTF-8", l.display()))?;
        // ':' separates layers and ',' options in the legacy string; escaping is not
        // supported by every kernel, so refuse.
        if p.contains([':', ',']) {
            bail!("layer path {p:?} contains ':' or ','");
        }
        if i > 0 {
            s.push(':');
        }
        s.push_str(p);
    }
    if let Some(u) = upper {
        s.push_str(&format!(
            ",upperdir={},workdir={}",
            u.upper.display(),
            u.work.display()
        ));
    }
    Ok(s)
}

fn mount_legacy(lowers: &[PathBuf], upper: Option<&Upper<'_>>, target: &Path) -> Result<()> {
    let data = legacy_options(lowers, upper)?;
    // The kernel copies at most one page of mount data and fails confusingly beyond it.
    if data.len() >= 4096 {
        bail!(
            "{} layers need {} bytes of overlay options, over the 4095 this kernel accepts \
             (Linux 6.8 or later stacks up to 500 layers)",
            lowers.len(),
            data.len()
        );
    }
    let mut flags = nix::mount::MsFlags::empty();
    if upper.is_none() {
        flags |= nix::mount::MsFlags::MS_RDONLY;
    }
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        flags,
        Some(data.as_str()),
    )
    .with_context(|| format!("mount overlay on {}", target.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_options_list_top_first() {
        let l = [PathBuf::from("/a"), PathBuf::from("/b")];
        let u = Upper {
            upper: Path::new("/u"),
            work: Path::new("/w"),
        };
        assert_eq!(
            legacy_options(&l, Some(&u)).unwrap(),
            "lowerdir=/a:/b,upperdir=/u,workdir=/w"
        );
        assert!(legacy_options(&[PathBuf::from("/a:b")], None).is_err());
    }
}
