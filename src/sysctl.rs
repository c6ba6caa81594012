//! linux.sysctl: which keys a container may set, and writing them where the container cannot
//! redirect the write.
//!
//! Only sysctls that belong to a namespace the container has of its own are accepted (runc's
//! rules): a global one such as `kernel.core_pattern` would change the host. The values are
//! written through a procfs instance the container never touched (CVE-2025-52881): a config or
//! image mount over `/proc/sys/...` of the container's /proc cannot turn the write into a
//! write to some other file.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::statfs::{PROC_SUPER_MAGIC, fstatfs};
use oci_spec::runtime::{Linux, LinuxNamespaceType};

/// The namespaces a sysctl can belong to that the container has of its own (new, or joined by
/// a path that is not the caller's own namespace).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OwnNamespaces {
    pub ipc: bool,
    pub net: bool,
    pub uts: bool,
}

/// The namespace a sysctl key lives in, or None for a global one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    Ipc,
    Net,
    Uts,
}

/// A key's path components. Both separators are accepted, as runc does: with '/' the dots are
/// part of a name (`net/ipv4/conf/eth0.100/forwarding`), as sysctl(8) reads them.
pub fn components(key: &str) -> Result<Vec<&str>> {
    let parts: Vec<&str> = if key.contains('/') {
        key.split('/').collect()
    } else {
        key.split('.').collect()
    };
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains('\0'))
    {
        bail!("field linux.sysctl: {key:?} is not a sysctl name");
    }
    Ok(parts)
}

fn owner(parts: &[&str]) -> Option<Owner> {
    match parts {
        ["kernel", name] if ["msg", "shm", "sem"].iter().any(|p| name.starts_with(p)) => {
            Some(Owner::Ipc)
        }
        ["fs", "mqueue", _, ..] => Some(Owner::Ipc),
        ["net", _, ..] => Some(Owner::Net),
        ["kernel", "hostname" | "domainname"] => Some(Owner::Uts),
        _ => None,
    }
}

/// Refuse any key that is not namespaced, or whose namespace the container shares with the
/// host. Pure: `own` says which namespaces the container has.
pub fn check(sysctl: &HashMap<String, String>, own: OwnNamespaces) -> Result<()> {
    let mut keys: Vec<&String> = sysctl.keys().collect();
    keys.sort();
    for key in keys {
        let (needed, has) = match owner(&components(key)?) {
            Some(Owner::Ipc) => ("an ipc", own.ipc),
            Some(Owner::Net) => ("a network", own.net),
            Some(Owner::Uts) => ("a uts", own.uts),
            None => bail!(
                "field linux.sysctl: {key:?} is not namespaced: setting it would change the host"
            ),
        };
        if !has {
            bail!(
                "field linux.sysctl: {key:?} needs {needed} namespace of the container's own \
                 in linux.namespaces"
            );
        }
    }
    Ok(())
}

/// Check linux.sysctl against linux.namespaces, before anything is created.
pub fn validate(linux: &Linux) -> Result<()> {
    match linux.sysctl() {
        Some(s) if !s.is_empty() => check(s, own_namespaces(linux)?),
        _ => Ok(()),
    }
}

fn own_namespaces(linux: &Linux) -> Result<OwnNamespaces> {
    let has = |typ: LinuxNamespaceType, proc_name: &str| -> Result<bool> {
        let Some(ns) = linux.namespaces().iter().flatten().find(|n| n.typ() == typ) else {
            return Ok(false);
        };
        match ns.path() {
            None => Ok(true),
            Some(p) => Ok(!same_namespace(
                p,
                &Path::new("/proc/self/ns").join(proc_name),
            )?),
        }
    };
    Ok(OwnNamespaces {
        ipc: has(LinuxNamespaceType::Ipc, "ipc")?,
        net: has(LinuxNamespaceType::Network, "net")?,
        uts: has(LinuxNamespaceType::Uts, "uts")?,
    })
}

/// Whether the namespace file `path` is the one lrun itself runs in: joining it shares the
/// namespace with the host (here "host" means the caller, as in runc).
fn same_namespace(path: &Path, ours: &Path) -> Result<bool> {
    let a = nix::sys::stat::stat(path)
        .with_context(|| format!("field linux.namespaces: stat {}", path.display()))?;
    let b = nix::sys::stat::stat(ours).with_context(|| format!("stat {}", ours.display()))?;
    Ok((a.st_dev, a.st_ino) == (b.st_dev, b.st_ino))
}

/// Write the sysctls. Runs in the container's init, in its namespaces (a sysctl's namespace is
/// the writer's), after pivot_root.
pub fn apply(sysctl: Option<&HashMap<String, String>>) -> Result<()> {
    let Some(sysctl) = sysctl.filter(|s| !s.is_empty()) else {
        return Ok(());
    };
    let proc_root = private_procfs("linux.sysctl")?;
    let mut keys: Vec<&String> = sysctl.keys().collect();
    keys.sort();
    for key in keys {
        let value = &sysctl[key];
        write_one(proc_root.as_fd(), key, value)
            .with_context(|| format!("linux.sysctl {key}={value}"))?;
    }
    Ok(())
}

/// A procfs of our own: a detached mount that no path of the container leads to. Where the
/// kernel refuses one (a user namespace that does not own our pid namespace), the container's
/// /proc, checked to be the root of a procfs; the writes then refuse to cross any mount in it.
/// `what` names the config field written through it, for errors. Also used by `lsm`.
pub fn private_procfs(what: &str) -> Result<OwnedFd> {
    use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, fsconfig_create, fsmount};
    let detached = rustix::mount::fsopen("proc", FsOpenFlags::FSOPEN_CLOEXEC).and_then(|fs| {
        fsconfig_create(fs.as_fd())?;
        fsmount(
            fs.as_fd(),
            FsMountFlags::FSMOUNT_CLOEXEC,
            MountAttrFlags::MOUNT_ATTR_NOSUID
                | MountAttrFlags::MOUNT_ATTR_NODEV
                | MountAttrFlags::MOUNT_ATTR_NOEXEC,
        )
    });
    let root = match detached {
        Ok(fd) => fd,
        Err(_) => nix::fcntl::open(
            "/proc",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .with_context(|| format!("open /proc to write {what}"))?,
    };
    check_proc_root(root.as_fd(), what)?;
    Ok(root)
}

/// The root directory of a procfs (inode 1), not some directory of one bound elsewhere.
fn check_proc_root(fd: BorrowedFd, what: &str) -> Result<()> {
    let fs = fstatfs(fd).context("fstatfs /proc")?;
    let st = nix::sys::stat::fstat(fd).context("fstat /proc")?;
    if fs.filesystem_type() != PROC_SUPER_MAGIC || st.st_ino != 1 {
        bail!("/proc is not the root of a procfs: {what} cannot be written safely");
    }
    Ok(())
}

fn write_one(proc_root: BorrowedFd, key: &str, value: &str) -> Result<()> {
    let rel = format!("sys/{}", components(key)?.join("/"));
    // No mount crossing, no symlinks: the file reached is the sysctl's own.
    let how = OpenHow::new()
        .flags(OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_XDEV
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    let fd = openat2(proc_root, rel.as_str(), how).map_err(|e| anyhow!("open /proc/{rel}: {e}"))?;
    if fstatfs(&fd).context("fstatfs")?.filesystem_type() != PROC_SUPER_MAGIC {
        bail!("/proc/{rel} is not a procfs file");
    }
    nix::unistd::write(&fd, value.as_bytes()).map_err(|e| anyhow!("write /proc/{rel}: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(key: &str) -> HashMap<String, String> {
        HashMap::from([(key.to_string(), "1".to_string())])
    }

    const ALL: OwnNamespaces = OwnNamespaces {
        ipc: true,
        net: true,
        uts: true,
    };

    #[test]
    fn global_sysctls_are_refused_whatever_the_namespaces() {
        for key in [
            "kernel.core_pattern",
            "kernel/core_pattern",
            "vm.overcommit_memory",
            "fs.file-max",
            "kernel.modprobe",
            "user.max_user_namespaces",
            "fs.mqueue",
            "net",
        ] {
            let err = check(&one(key), ALL).unwrap_err().to_string();
            assert!(err.contains(key) && !err.contains('\n'), "{key}: {err}");
        }
    }

    #[test]
    fn namespaced_sysctls_need_their_namespace() {
        for (key, own) in [
            (
                "kernel.shmmax",
                OwnNamespaces {
                    ipc: true,
                    ..Default::default()
                },
            ),
            (
                "kernel.msgmnb",
                OwnNamespaces {
                    ipc: true,
                    ..Default::default()
                },
            ),
            (
                "kernel.sem",
                OwnNamespaces {
                    ipc: true,
                    ..Default::default()
                },
            ),
            (
                "fs.mqueue.queues_max",
                OwnNamespaces {
                    ipc: true,
                    ..Default::default()
                },
            ),
            (
                "net.ipv4.ip_forward",
                OwnNamespaces {
                    net: true,
                    ..Default::default()
                },
            ),
            (
                "net/ipv4/conf/eth0.100/forwarding",
                OwnNamespaces {
                    net: true,
                    ..Default::default()
                },
            ),
            (
                "kernel.domainname",
                OwnNamespaces {
                    uts: true,
                    ..Default::default()
                },
            ),
        ] {
            assert!(check(&one(key), own).is_ok(), "{key}");
            let err = check(&one(key), OwnNamespaces::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(key) && err.contains("namespace"),
                "{key}: {err}"
            );
        }
    }

    #[test]
    fn keys_cannot_climb_out_of_their_namespace() {
        for key in [
            "net/../kernel/core_pattern",
            "net.ipv4..ip_forward",
            "net/./ipv4",
            "/net/ipv4/ip_forward",
            "net.ipv4.ip_forward.",
            "net.ipv4\0.x",
        ] {
            let err = check(&one(key), ALL).unwrap_err().to_string();
            assert!(err.contains("not a sysctl name"), "{key}: {err}");
        }
    }

    #[test]
    fn only_the_root_of_a_procfs_is_accepted() {
        let open = |p: &str| {
            nix::fcntl::open(
                p,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .unwrap()
        };
        assert!(check_proc_root(open("/proc").as_fd(), "x").is_ok());
        assert!(check_proc_root(open("/proc/self").as_fd(), "x").is_err());
        assert!(check_proc_root(open("/").as_fd(), "x").is_err());
    }

    #[test]
    fn both_separators_give_the_same_file() {
        assert_eq!(
            components("net.ipv4.ip_forward").unwrap(),
            components("net/ipv4/ip_forward").unwrap()
        );
        assert_eq!(
            components("net/ipv4/conf/eth0.100/forwarding").unwrap(),
            ["net", "ipv4", "conf", "eth0.100", "forwarding"]
        );
    }
}
