//! Which namespaces a container creates and which it joins, and how to enter them.
//!
//! The common case (every namespace new, no time namespace) is one clone(2) call with all the
//! flags. Joining a namespace by path, or a time namespace, needs an ordered sequence instead:
//! setns into the joined ones (user first, so the others are entered with its privileges),
//! unshare the user namespace, let the parent write the id maps, unshare the rest, and fork the
//! real init when the pid or time namespace only applies to children.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns, unshare};
use oci_spec::runtime::{Linux, LinuxIdMapping, LinuxNamespaceType};

/// The namespace part of a container's creation, worked out by the parent before cloning.
pub struct Plan {
    /// One clone call creates every namespace (but the cgroup one): no joining, no time
    /// namespace, no intermediate process.
    pub direct: bool,
    /// Created by the clone(2) call that makes the first child.
    pub clone_flags: CloneFlags,
    /// Entered by the first child, in this order.
    pub join: Vec<(LinuxNamespaceType, OwnedFd)>,
    /// Created by the first child with unshare(2) after joining (the user namespace is done
    /// separately, before the parent writes the maps).
    pub unshare_flags: CloneFlags,
    /// The first child creates a user namespace with unshare(2).
    pub unshare_user: bool,
    /// The first child forks the container's init (pid or time namespace entered by unshare or
    /// setns only apply to children).
    pub fork_init: bool,
    /// A new user namespace exists: the parent writes uid/gid maps.
    pub new_user: bool,
    pub new_time: bool,
    pub new_cgroup: bool,
    pub new_uts: bool,
    /// A mount namespace of the container's own (new or joined). Without one it shares the
    /// caller's: no mounts, a chroot instead of pivot_root (bundle.rs says what is refused).
    pub mount_ns: bool,
}

pub fn flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

impl Plan {
    /// Open every namespace to join now, in the parent, so a bad path fails `create` early.
    pub fn new(linux: Option<&Linux>) -> Result<Plan> {
        let mut new = CloneFlags::empty();
        let mut join = Vec::new();
        for ns in linux
            .and_then(|l| l.namespaces().as_ref())
            .into_iter()
            .flatten()
        {
            match ns.path() {
                Some(path) => {
                    let f = File::open(path).with_context(|| {
                        format!(
                            "linux.namespaces: {} namespace path {}",
                            ns.typ(),
                            path.display()
                        )
                    })?;
                    check_type(&f, ns.typ(), path)?;
                    join.push((ns.typ(), OwnedFd::from(f)));
                }
                None => new |= flag(ns.typ()),
            }
        }
        // The user namespace first: it grants the rights to enter namespaces it owns.
        join.sort_by_key(|(t, _)| *t != LinuxNamespaceType::User);

        let has = |f: CloneFlags| new.contains(f);
        let new_time = has(flag(LinuxNamespaceType::Time));
        let mount_ns = has(CloneFlags::CLONE_NEWNS)
            || join.iter().any(|(t, _)| *t == LinuxNamespaceType::Mount);
        let joins_pid = join.iter().any(|(t, _)| *t == LinuxNamespaceType::Pid);
        let new_user = has(CloneFlags::CLONE_NEWUSER);
        // The cgroup namespace is unshared only after the parent has moved the child into the
        // container's cgroup, so that cgroup becomes the namespace's root.
        let late = CloneFlags::CLONE_NEWCGROUP;
        let direct = join.is_empty() && !new_time;
        let plan = if direct {
            Plan {
                direct,
                clone_flags: new - late,
                join,
                unshare_flags: new & late,
                unshare_user: false,
                fork_init: false,
                new_user,
                new_time,
                new_cgroup: has(late),
                new_uts: has(CloneFlags::CLONE_NEWUTS),
                mount_ns,
            }
        } else {
            Plan {
                direct,
                clone_flags: CloneFlags::empty(),
                join,
                // The time namespace comes early, with the user one (see enter_early).
                unshare_flags: new - CloneFlags::CLONE_NEWUSER - flag(LinuxNamespaceType::Time),
                unshare_user: new_user,
                fork_init: has(CloneFlags::CLONE_NEWPID) || new_time || joins_pid,
                new_user,
                new_time,
                new_cgroup: has(late),
                new_uts: has(CloneFlags::CLONE_NEWUTS),
                mount_ns,
            }
        };
        Ok(plan)
    }

    /// A new mount namespace (not one joined): mounts made in it go with the container.
    pub fn new_mount_ns(&self) -> bool {
        (self.clone_flags | self.unshare_flags).contains(CloneFlags::CLONE_NEWNS)
    }

    /// First child, before the parent's set-up: enter joined namespaces, create the user one.
    pub fn enter_early(&self) -> Result<()> {
        for (t, fd) in &self.join {
            setns(fd.as_fd(), flag(*t)).with_context(|| format!("setns into the {t} namespace"))?;
        }
        if self.unshare_user {
            unshare(CloneFlags::CLONE_NEWUSER).context("unshare the user namespace")?;
        }
        if self.new_time {
            // Before the parent's set-up: the parent writes its offsets (our own /proc files
            // are root's, lrun being non-dumpable, so in a user namespace we could not).
            unshare(flag(LinuxNamespaceType::Time)).context("unshare the time namespace")?;
        }
        Ok(())
    }

    /// First child, after the parent's set-up: create the remaining namespaces.
    pub fn enter_late(&self) -> Result<()> {
        if !self.unshare_flags.is_empty() {
            unshare(self.unshare_flags)
                .with_context(|| format!("unshare namespaces {:?}", self.unshare_flags))?;
        }
        Ok(())
    }
}

/// The text of /proc/PID/uid_map (or gid_map) for a list of mappings.
pub fn id_map_text(maps: &[LinuxIdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// Write the id maps of a child's new user namespace (the parent does this: it holds
/// CAP_SETUID/CAP_SETGID in the namespace above).
pub fn write_id_maps(pid: i32, linux: &Linux) -> Result<()> {
    let uid = linux.uid_mappings().as_deref().unwrap_or_default();
    let gid = linux.gid_mappings().as_deref().unwrap_or_default();
    if uid.is_empty() || gid.is_empty() {
        bail!("linux.uidMappings and linux.gidMappings are required with a new user namespace");
    }
    std::fs::write(format!("/proc/{pid}/uid_map"), id_map_text(uid))
        .context("write uid_map (linux.uidMappings)")?;
    std::fs::write(format!("/proc/{pid}/gid_map"), id_map_text(gid))
        .context("write gid_map (linux.gidMappings)")?;
    Ok(())
}

/// Set the offsets of the time namespace a child created (the parent does this, before any
/// process lives in that namespace, which is when the kernel still accepts them).
pub fn write_time_offsets(pid: i32, linux: &Linux) -> Result<()> {
    if let Some(text) = time_offsets_text(linux) {
        std::fs::write(format!("/proc/{pid}/timens_offsets"), text)
            .context("write timens_offsets (linux.timeOffsets)")?;
    }
    Ok(())
}

/// The text of /proc/PID/timens_offsets for linux.timeOffsets.
pub fn time_offsets_text(linux: &Linux) -> Option<String> {
    let offsets = linux.time_offsets().as_ref()?;
    let mut text = String::new();
    let mut keys: Vec<_> = offsets.keys().collect();
    keys.sort();
    for k in keys {
        let o = &offsets[k];
        text.push_str(&format!(
            "{k} {} {}\n",
            o.secs().unwrap_or(0),
            o.nanosecs().unwrap_or(0)
        ));
    }
    Some(text)
}

/// Map a container uid to the host (identity without a user namespace).
pub fn host_id(maps: Option<&Vec<LinuxIdMapping>>, id: u32) -> u32 {
    let Some(maps) = maps.filter(|m| !m.is_empty()) else {
        return id;
    };
    maps.iter()
        .find(|m| id >= m.container_id() && id - m.container_id() < m.size())
        .map(|m| m.host_id() + (id - m.container_id()))
        .unwrap_or(65534)
}

/// config-linux.md: the runtime MUST generate an error if `path` is not associated with a
/// namespace of type `type` (setns would only say EINVAL, and only in the child).
fn check_type(f: &File, typ: LinuxNamespaceType, path: &std::path::Path) -> Result<()> {
    // NS_GET_NSTYPE (linux/nsfs.h): the namespace's CLONE_NEW* flag.
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: an ioctl without an argument on an fd we own.
    let got = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(f), NS_GET_NSTYPE) };
    if got < 0 || got != flag(typ).bits() {
        anyhow::bail!(
            "linux.namespaces: {typ} namespace path {}: not a {typ} namespace",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linux(json: &str) -> Linux {
        serde_json::from_str(json).expect("linux json")
    }

    #[test]
    fn all_new_namespaces_use_one_clone() {
        let l = linux(r#"{"namespaces":[{"type":"pid"},{"type":"mount"},{"type":"cgroup"}]}"#);
        let p = Plan::new(Some(&l)).expect("plan");
        assert!(
            p.clone_flags
                .contains(CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS)
        );
        assert!(!p.clone_flags.contains(CloneFlags::CLONE_NEWCGROUP));
        assert_eq!(p.unshare_flags, CloneFlags::CLONE_NEWCGROUP);
        assert!(!p.fork_init);
    }

    #[test]
    fn a_joined_mount_namespace_is_not_a_new_one() {
        let l = linux(r#"{"namespaces":[{"type":"mount"}]}"#);
        assert!(Plan::new(Some(&l)).expect("plan").new_mount_ns());
        // Not direct (a time namespace): created by unshare.
        let l = linux(r#"{"namespaces":[{"type":"mount"},{"type":"time"}]}"#);
        assert!(Plan::new(Some(&l)).expect("plan").new_mount_ns());
        let l = linux(r#"{"namespaces":[{"type":"mount","path":"/proc/self/ns/mnt"}]}"#);
        let p = Plan::new(Some(&l)).expect("plan");
        assert!(p.mount_ns && !p.new_mount_ns());
        let l = linux(r#"{"namespaces":[{"type":"pid"}]}"#);
        assert!(!Plan::new(Some(&l)).expect("plan").new_mount_ns());
    }

    #[test]
    fn time_namespace_needs_a_fork() {
        let l = linux(r#"{"namespaces":[{"type":"pid"},{"type":"time"}]}"#);
        let p = Plan::new(Some(&l)).expect("plan");
        assert!(p.clone_flags.is_empty());
        assert!(p.fork_init);
    }

    #[test]
    fn a_path_to_another_type_of_namespace_is_refused() {
        let l = linux(r#"{"namespaces":[{"type":"uts","path":"/proc/self/ns/net"}]}"#);
        let err = format!("{:#}", Plan::new(Some(&l)).err().expect("error"));
        assert_eq!(
            err,
            "linux.namespaces: uts namespace path /proc/self/ns/net: not a uts namespace"
        );
        let l = linux(r#"{"namespaces":[{"type":"uts","path":"/proc/self/ns/uts"}]}"#);
        assert!(Plan::new(Some(&l)).is_ok());
        let l = linux(r#"{"namespaces":[{"type":"uts","path":"/etc/hostname"}]}"#);
        assert!(Plan::new(Some(&l)).is_err());
    }

    #[test]
    fn missing_namespace_path_is_named() {
        let l = linux(r#"{"namespaces":[{"type":"network","path":"/nonexistent/ns"}]}"#);
        let err = format!("{:#}", Plan::new(Some(&l)).err().expect("error"));
        assert!(err.contains("/nonexistent/ns"), "{err}");
    }

    #[test]
    fn host_id_follows_mappings() {
        let maps: Vec<LinuxIdMapping> =
            serde_json::from_str(r#"[{"containerID":0,"hostID":100000,"size":65536}]"#).unwrap();
        assert_eq!(host_id(Some(&maps), 0), 100000);
        assert_eq!(host_id(Some(&maps), 1000), 101000);
        assert_eq!(host_id(None, 5), 5);
    }
}
