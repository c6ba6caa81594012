//! Linux security modules: `process.apparmorProfile`, `process.selinuxLabel` (for the
//! container's process and for `exec`) and `linux.mountLabel` (the filesystems lrun mounts).
//!
//! Where the kernel lacks the module a config that asks for it is refused before anything
//! exists: silently running a container unconfined when its config asks for confinement would
//! be worse than not running it (runc and crun refuse too, though only once the init runs).
//! The labels take effect at the next `execve` (the kernel's "exec" attribute), written through
//! a procfs the container cannot have mounted over (see `sysctl::private_procfs`).

use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{Result, anyhow, bail};
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::statfs::{PROC_SUPER_MAGIC, fstatfs, statfs};
use oci_spec::runtime::Process;

/// selinuxfs's magic number (linux/magic.h).
const SELINUX_MAGIC: i64 = 0xf97c_ff8c;

/// AppArmor is enabled as runc and libapparmor check it: securityfs has its directory and the
/// module's `enabled` parameter says Y.
pub fn apparmor_enabled() -> bool {
    Path::new("/sys/kernel/security/apparmor").exists()
        && std::fs::read("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|b| b.first() == Some(&b'Y'))
}

/// SELinux is enabled when selinuxfs is mounted (libselinux's test; the kernel mounts it at
/// /sys/fs/selinux only when SELinux is active).
pub fn selinux_enabled() -> bool {
    ["/sys/fs/selinux", "/selinux"]
        .iter()
        .any(|p| statfs(*p).is_ok_and(|s| s.filesystem_type().0 == SELINUX_MAGIC))
}

/// Refuse a config whose LSM settings this kernel cannot honour. Runs for `create` (with the
/// config's process and mountLabel) and for `exec` (with the process to run).
pub fn check(process: &Process, mount_label: Option<&str>) -> Result<()> {
    check_with(process, mount_label, apparmor_enabled(), selinux_enabled())
}

fn check_with(
    process: &Process,
    mount_label: Option<&str>,
    apparmor: bool,
    selinux: bool,
) -> Result<()> {
    if let Some(p) = nonempty(process.apparmor_profile().as_deref()) {
        if !apparmor {
            bail!(
                "process.apparmorProfile {p:?}: apparmor profile specified but AppArmor is not enabled on this system"
            );
        }
        if p.contains(['\n', '\0']) {
            bail!("process.apparmorProfile {p:?}: a profile name is one line");
        }
    }
    // runc's words (validateProcessSpec, and the validator for mountLabel's sibling).
    if let Some(l) = nonempty(process.selinux_label().as_deref()) {
        if !selinux {
            bail!(
                "process.selinuxLabel {l:?}: selinux label is specified in config, but selinux is disabled or not supported"
            );
        }
        if l.contains(['\n', '\0']) {
            bail!("process.selinuxLabel {l:?}: a label is one line");
        }
    }
    if let Some(l) = nonempty(mount_label) {
        if !selinux {
            bail!(
                "linux.mountLabel {l:?}: mount label is specified in config, but selinux is disabled or not supported"
            );
        }
        if l.contains([',', '"', '\n', '\0']) {
            bail!("linux.mountLabel {l:?}: not a valid SELinux context");
        }
    }
    Ok(())
}

fn nonempty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

/// The mount option that gives a new filesystem `linux.mountLabel` (runc's FormatMountLabel:
/// tmpfs, devpts and other new filesystems; not proc, sysfs, cgroup or mqueue, whose files
/// carry their own labels). None when there is no label or the options already set one.
pub fn mount_context(mount_label: Option<&str>, fstype: &str, data: &[String]) -> Option<String> {
    let label = nonempty(mount_label)?;
    if matches!(fstype, "proc" | "sysfs" | "cgroup" | "cgroup2" | "mqueue")
        || data.iter().any(|o| o.starts_with("context="))
    {
        return None;
    }
    Some(format!("context={label}"))
}

/// Set the AppArmor profile and the SELinux label the next `execve` of this thread enters.
/// Called by the container's process (init or exec) in its own namespaces after pivot_root.
/// Forked children inherit them too (runc's startContainer hooks run under them).
pub fn set_exec_labels(process: &Process) -> Result<()> {
    let profile = nonempty(process.apparmor_profile().as_deref());
    let label = nonempty(process.selinux_label().as_deref());
    if profile.is_none() && label.is_none() {
        return Ok(());
    }
    let proc_root = crate::sysctl::private_procfs("the process's LSM label")?;
    let task = format!("{}/task/{}/attr", std::process::id(), nix::unistd::gettid());
    if let Some(p) = profile {
        // AppArmor's own directory since Linux 5.8 (stackable LSMs); before, the shared file.
        let value = format!("exec {p}");
        match write_attr(proc_root.as_fd(), &format!("{task}/apparmor/exec"), &value) {
            Err(AttrError::Missing) => {
                write_attr(proc_root.as_fd(), &format!("{task}/exec"), &value)
            }
            r => r,
        }
        .map_err(|e| anyhow!("process.apparmorProfile {p:?}: {e}"))?;
    }
    if let Some(l) = label {
        write_attr(proc_root.as_fd(), &format!("{task}/exec"), l)
            .map_err(|e| anyhow!("process.selinuxLabel {l:?}: {e}"))?;
    }
    Ok(())
}

#[derive(Debug)]
enum AttrError {
    Missing,
    Other(String),
}

impl std::fmt::Display for AttrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttrError::Missing => f.write_str("the kernel has no such attribute"),
            AttrError::Other(s) => f.write_str(s),
        }
    }
}

fn write_attr(proc_root: std::os::fd::BorrowedFd, rel: &str, value: &str) -> Result<(), AttrError> {
    // No symlinks, no mount crossing: the file reached is our own task's attribute.
    let how = OpenHow::new()
        .flags(OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_XDEV
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    let fd = match openat2(proc_root, rel, how) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Err(AttrError::Missing),
        Err(e) => return Err(AttrError::Other(format!("open /proc/{rel}: {e}"))),
    };
    if fstatfs(&fd).map_or(true, |s| s.filesystem_type() != PROC_SUPER_MAGIC) {
        return Err(AttrError::Other(format!(
            "/proc/{rel} is not a procfs file"
        )));
    }
    // One write: the kernel takes the whole value or refuses it (e.g. ENOENT for a profile
    // that is not loaded, EINVAL without the module).
    match nix::unistd::write(&fd, value.as_bytes()) {
        Ok(n) if n == value.len() => Ok(()),
        Ok(n) => Err(AttrError::Other(format!(
            "write /proc/{rel}: short write ({n} bytes)"
        ))),
        Err(e) => Err(AttrError::Other(format!(
            "write /proc/{rel}: {}",
            crate::process::errno_text(e)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(apparmor: Option<&str>, selinux: Option<&str>) -> Process {
        let mut p = Process::default();
        p.set_apparmor_profile(apparmor.map(String::from));
        p.set_selinux_label(selinux.map(String::from));
        p
    }

    #[test]
    fn a_config_asking_for_a_missing_lsm_is_refused_naming_the_field() {
        let err = check_with(&process(Some("p"), None), None, false, false).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("process.apparmorProfile \"p\": "),
            "{err}"
        );
        let err = check_with(&process(None, Some("l")), None, false, false).unwrap_err();
        assert!(
            err.to_string().starts_with("process.selinuxLabel \"l\": "),
            "{err}"
        );
        let err = check_with(&process(None, None), Some("l"), false, false).unwrap_err();
        assert!(
            err.to_string().starts_with("linux.mountLabel \"l\": "),
            "{err}"
        );
        // Empty strings ask for nothing.
        check_with(&process(Some(""), Some("")), Some(""), false, false).unwrap();
        check_with(&process(Some("p"), Some("l")), Some("m"), true, true).unwrap();
        assert!(check_with(&process(Some("p\nq"), None), None, true, true).is_err());
        assert!(check_with(&process(None, None), Some("a,b"), true, true).is_err());
    }

    #[test]
    fn the_mount_label_goes_on_new_filesystems_only() {
        let none: &[String] = &[];
        assert_eq!(
            mount_context(Some("l:r:t:s0"), "tmpfs", none).as_deref(),
            Some("context=l:r:t:s0")
        );
        assert_eq!(mount_context(Some("l"), "proc", none), None);
        assert_eq!(mount_context(None, "tmpfs", none), None);
        let own = ["context=x".to_string()];
        assert_eq!(mount_context(Some("l"), "tmpfs", &own), None);
    }
}
