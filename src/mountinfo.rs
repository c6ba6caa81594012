//! /proc/self/mountinfo: reading it (an unreadable file is an error, never "no mounts") and
//! finding the cgroup mounts in it. Shared by `cgroups` (where a container's cgroups go) and
//! `rootfs` (which cgroup hierarchies to mount in the container).

use std::path::PathBuf;

use anyhow::{Context, Result};

pub const SELF_MOUNTINFO: &str = "/proc/self/mountinfo";

/// The text of /proc/self/mountinfo, or an error naming it.
pub fn read_self() -> Result<String> {
    std::fs::read_to_string(SELF_MOUNTINFO).with_context(|| format!("read {SELF_MOUNTINFO}"))
}

/// One cgroup or cgroup2 mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// The path inside the hierarchy that is mounted (field 4 of mountinfo).
    pub root: String,
    pub mount_point: PathBuf,
    pub v2: bool,
    /// For v1: the controllers (and `name=X`) from the super options.
    pub controllers: Vec<String>,
}

/// Undo mountinfo's octal escapes (`\040` for a space, and so on).
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(oct) = field.get(i + 1..i + 4)
            && let Ok(v) = u8::from_str_radix(oct, 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup and cgroup2 mounts listed in a mountinfo text that are still reachable.
///
/// A mount stays listed after another is mounted over it (or over a parent directory, as
/// tools/cgroup-sandbox.sh does with a tmpfs at /sys/fs/cgroup): such hidden mounts are
/// dropped, or paths under them would point at whatever now covers them.
pub fn cgroup_mounts(text: &str) -> Vec<CgroupMount> {
    // (id, parent id, mount point) of every mount, in mount order.
    let mut all: Vec<(u64, u64, PathBuf)> = Vec::new();
    let mut mounts: Vec<(usize, CgroupMount)> = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if left.len() < 5 || right.len() < 3 {
            continue;
        }
        let (Ok(id), Ok(parent)) = (left[0].parse(), left[1].parse()) else {
            continue;
        };
        let mount_point = PathBuf::from(unescape(left[4]));
        all.push((id, parent, mount_point.clone()));
        let v2 = match right[0] {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        let controllers = if v2 {
            Vec::new()
        } else {
            right[2]
                .split(',')
                .filter(|o| is_v1_controller(o))
                .map(str::to_string)
                .collect()
        };
        mounts.push((
            all.len() - 1,
            CgroupMount {
                root: unescape(left[3]),
                mount_point,
                v2,
                controllers,
            },
        ));
    }
    mounts
        .into_iter()
        .filter(|(idx, _)| !is_hidden(&all, *idx))
        .map(|(_, m)| m)
        .collect()
}

/// Is mount `idx` covered by a later mount at its mount point or above it, other than one of
/// its own ancestors?
fn is_hidden(all: &[(u64, u64, PathBuf)], idx: usize) -> bool {
    let (_, _, mp) = &all[idx];
    let mut ancestors = Vec::new();
    let mut parent = all[idx].1;
    // Bounded walk: a malformed table must not loop forever.
    for _ in 0..all.len() {
        match all.iter().find(|(id, _, _)| *id == parent) {
            Some((id, p, _)) if !ancestors.contains(id) => {
                ancestors.push(*id);
                parent = *p;
            }
            _ => break,
        }
    }
    all[idx + 1..]
        .iter()
        .any(|(id, _, other)| mp.starts_with(other) && !ancestors.contains(id))
}

/// Super options of a v1 mount mix controllers with flags; keep only the controllers.
fn is_v1_controller(opt: &str) -> bool {
    if opt.starts_with("name=") {
        return true;
    }
    matches!(
        opt,
        "cpu"
            | "cpuacct"
            | "cpuset"
            | "memory"
            | "devices"
            | "freezer"
            | "net_cls"
            | "net_prio"
            | "blkio"
            | "perf_event"
            | "hugetlb"
            | "pids"
            | "rdma"
            | "misc"
            | "debug"
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn mounts_covered_by_a_later_mount_are_ignored() {
        // tools/cgroup-sandbox.sh: a tmpfs over /sys/fs/cgroup with fresh v1 mounts, the old
        // ones (cgroup2 included) still listed underneath.
        let mi = "\
47 46 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw
51 47 0:32 /../.. /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
57 47 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
63 47 0:39 / /sys/fs/cgroup rw - tmpfs cgroup-sandbox rw
67 63 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
        let m = cgroup_mounts(mi);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].root, "/");
        // A mount below a covering mount's own subtree stays.
        let mi2 = "\
31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
        assert_eq!(cgroup_mounts(mi2).len(), 1);
    }

    #[test]
    fn escaped_mount_points_are_decoded() {
        let mi = "41 31 0:38 / /tmp/my\\040cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup_mounts(mi)[0].mount_point, Path::new("/tmp/my cg"));
    }
}
