//! Where the cgroup hierarchies are mounted and where a container's cgroups go.
//!
//! Everything here is pure text processing over /proc/self/mountinfo and /proc/self/cgroup so
//! the rules can be tested on made-up layouts (pure v1, hybrid, pure v2) without a kernel.

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::mountinfo;
pub use crate::mountinfo::CgroupMount;

/// Which cgroup hierarchies the machine uses, found from mountinfo, never assumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No cgroup filesystem is mounted: the manager does nothing.
    #[default]
    None,
    /// Only v1 hierarchies.
    Legacy,
    /// v1 hierarchies for the controllers plus a cgroup2 mount (often /sys/fs/cgroup/unified)
    /// used for process tracking only.
    Hybrid,
    /// Only cgroup2.
    Unified,
}

/// One line of /proc/self/cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnCgroup {
    pub hierarchy: u32,
    /// Empty for the v2 line (`0::/path`).
    pub controllers: Vec<String>,
    pub path: String,
}

/// A mounted v1 hierarchy together with the caller's place in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchy {
    pub controllers: Vec<String>,
    pub mount: CgroupMount,
    pub own_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchies {
    pub mode: Mode,
    pub v1: Vec<V1Hierarchy>,
    /// The cgroup2 mount and the caller's path in it.
    pub v2: Option<(CgroupMount, String)>,
}

pub fn parse_proc_cgroup(text: &str) -> Result<Vec<OwnCgroup>> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            bail!("malformed line {line:?} in /proc/self/cgroup");
        };
        let hierarchy = id
            .parse()
            .with_context(|| format!("malformed hierarchy id in {line:?} of /proc/self/cgroup"))?;
        let controllers = if ctrls.is_empty() {
            Vec::new()
        } else {
            ctrls.split(',').map(str::to_string).collect()
        };
        out.push(OwnCgroup {
            hierarchy,
            controllers,
            path: path.to_string(),
        });
    }
    Ok(out)
}

/// Match the caller's hierarchies with their mounts and tell the layout apart.
pub fn detect(mountinfo: &str, proc_cgroup: &str) -> Result<Hierarchies> {
    let mounts = mountinfo::cgroup_mounts(mountinfo);
    let own = parse_proc_cgroup(proc_cgroup)?;
    let mut v1 = Vec::new();
    let mut v2 = None;
    for o in &own {
        if o.hierarchy == 0 {
            // The 0:: line appears even without a cgroup2 mount.
            v2 = pick_mount(mounts.iter().filter(|m| m.v2), &o.path).map(|m| (m, o.path.clone()));
            continue;
        }
        let candidates = mounts.iter().filter(|m| {
            !m.v2
                && !o.controllers.is_empty()
                && o.controllers.iter().all(|c| m.controllers.contains(c))
        });
        if let Some(mount) = pick_mount(candidates, &o.path) {
            v1.push(V1Hierarchy {
                controllers: o.controllers.clone(),
                mount,
                own_path: o.path.clone(),
            });
        }
    }
    let mode = match (v1.is_empty(), v2.is_some()) {
        (true, false) => Mode::None,
        (false, false) => Mode::Legacy,
        (false, true) => Mode::Hybrid,
        (true, true) => Mode::Unified,
    };
    Ok(Hierarchies { mode, v1, v2 })
}

/// A hierarchy can be mounted several times (bind mounts of subtrees): prefer a mount whose
/// root contains the caller's cgroup, the shortest such root first.
fn pick_mount<'a>(
    candidates: impl Iterator<Item = &'a CgroupMount>,
    own_path: &str,
) -> Option<CgroupMount> {
    candidates
        .filter(|m| strip_root(own_path, &m.root).is_some())
        .min_by_key(|m| m.root.len())
        .cloned()
}

/// `own` relative to the mount's root, or None if it lies outside it.
fn strip_root<'a>(own: &'a str, root: &str) -> Option<&'a str> {
    if root == "/" {
        return Some(own.trim_start_matches('/'));
    }
    let rest = own.strip_prefix(root)?;
    if rest.is_empty() || rest.starts_with('/') {
        Some(rest.trim_start_matches('/'))
    } else {
        None
    }
}

/// Clean a cgroupsPath lexically as if it were rooted, so `..` can never climb above the
/// mount (absolute) or the caller's cgroup (relative). Returns (is_absolute, components).
pub fn clean_cgroups_path(p: &Path) -> (bool, PathBuf) {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    (p.is_absolute(), out)
}

/// Where one hierarchy puts the container.
///
/// `parent_of_own` is true for pure v2: the caller's own cgroup has processes, so by the
/// "no internal processes" rule its children could not get controllers; runc uses the parent
/// of the caller's cgroup there, and so does lrun.
pub fn container_dir(
    mount: &CgroupMount,
    own_path: &str,
    cgroups_path: Option<&Path>,
    id: &str,
    parent_of_own: bool,
) -> Result<PathBuf> {
    let requested = match cgroups_path {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from(id),
    };
    let (absolute, inner) = clean_cgroups_path(&requested);
    if inner.as_os_str().is_empty() {
        bail!(
            "cgroupsPath {} names the root of the hierarchy; give the container its own cgroup",
            requested.display()
        );
    }
    if absolute {
        return Ok(mount.mount_point.join(inner));
    }
    let Some(rel_own) = strip_root(own_path, &mount.root) else {
        bail!(
            "our own cgroup {own_path} is outside the hierarchy mounted at {} (root {}): \
             cannot nest the container beneath it",
            mount.mount_point.display(),
            mount.root
        );
    };
    let mut base = mount.mount_point.join(rel_own);
    if parent_of_own && !rel_own.is_empty() {
        base.pop();
    }
    Ok(base.join(inner))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
22 1 0:21 / / rw - overlay overlay rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
";
    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
6:freezer:/
4:memory:/process_api/abc
2:cpuacct:/
1:cpu:/
0::/
";

    #[test]
    fn hybrid_layout_is_detected_with_caller_paths() {
        let h = detect(HYBRID_MOUNTINFO, HYBRID_CGROUP).unwrap();
        assert_eq!(h.mode, Mode::Hybrid);
        assert_eq!(h.v1.len(), 5);
        let mem = h.v1.iter().find(|x| x.controllers == ["memory"]).unwrap();
        assert_eq!(mem.own_path, "/process_api/abc");
        assert_eq!(mem.mount.mount_point, Path::new("/sys/fs/cgroup/memory"));
        let sd =
            h.v1.iter()
                .find(|x| x.controllers == ["name=systemd"])
                .unwrap();
        assert_eq!(sd.mount.controllers, ["name=systemd"]);
        let (m, own) = h.v2.unwrap();
        assert_eq!(m.mount_point, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(own, "/");
    }

    #[test]
    fn pure_v1_and_pure_v2_are_told_apart() {
        let v1_only: String = HYBRID_MOUNTINFO
            .lines()
            .filter(|l| !l.contains("cgroup2"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(detect(&v1_only, HYBRID_CGROUP).unwrap().mode, Mode::Legacy);
        let v2 = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let h = detect(v2, "0::/user.slice/session-1.scope\n").unwrap();
        assert_eq!(h.mode, Mode::Unified);
        assert!(h.v1.is_empty());
        assert_eq!(detect("", "0::/\n").unwrap().mode, Mode::None);
    }

    #[test]
    fn comounted_controllers_share_one_hierarchy() {
        let mi = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let h = detect(mi, "2:cpu,cpuacct:/x\n0::/\n").unwrap();
        assert_eq!(h.v1.len(), 1);
        assert_eq!(h.v1[0].controllers, ["cpu", "cpuacct"]);
    }

    #[test]
    fn only_the_covering_v1_mounts_count() {
        // tools/cgroup-sandbox.sh hides the host's mounts (cgroup2 included) under a tmpfs.
        let mi = "\
47 46 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw
51 47 0:32 /../.. /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
57 47 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
63 47 0:39 / /sys/fs/cgroup rw - tmpfs cgroup-sandbox rw
67 63 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
        let h = detect(mi, "4:memory:/\n0::/\n").unwrap();
        assert_eq!(h.mode, Mode::Legacy);
    }

    fn mount(root: &str, mp: &str) -> CgroupMount {
        CgroupMount {
            root: root.into(),
            mount_point: mp.into(),
            v2: false,
            controllers: vec!["memory".into()],
        }
    }

    #[test]
    fn relative_and_absent_paths_nest_under_own_cgroup() {
        let m = mount("/", "/sys/fs/cgroup/memory");
        let own = "/process_api/abc";
        assert_eq!(
            container_dir(&m, own, None, "c1", false).unwrap(),
            Path::new("/sys/fs/cgroup/memory/process_api/abc/c1")
        );
        assert_eq!(
            container_dir(&m, own, Some(Path::new("")), "c1", false).unwrap(),
            Path::new("/sys/fs/cgroup/memory/process_api/abc/c1")
        );
        assert_eq!(
            container_dir(&m, own, Some(Path::new("pod/c1")), "c1", false).unwrap(),
            Path::new("/sys/fs/cgroup/memory/process_api/abc/pod/c1")
        );
        // `..` cannot climb out of the caller's cgroup.
        assert_eq!(
            container_dir(&m, own, Some(Path::new("../../x")), "c1", false).unwrap(),
            Path::new("/sys/fs/cgroup/memory/process_api/abc/x")
        );
    }

    #[test]
    fn absolute_paths_start_at_the_mount_point() {
        let m = mount("/", "/sys/fs/cgroup/memory");
        assert_eq!(
            container_dir(
                &m,
                "/process_api/abc",
                Some(Path::new("/a/../b/c1")),
                "x",
                false
            )
            .unwrap(),
            Path::new("/sys/fs/cgroup/memory/b/c1")
        );
        assert!(container_dir(&m, "/", Some(Path::new("/..")), "x", false).is_err());
    }

    #[test]
    fn subtree_mounts_strip_their_root() {
        let m = mount("/process_api", "/mnt/mem");
        assert_eq!(
            container_dir(&m, "/process_api/abc", None, "c1", false).unwrap(),
            Path::new("/mnt/mem/abc/c1")
        );
        assert!(container_dir(&m, "/elsewhere", None, "c1", false).is_err());
        assert!(container_dir(&m, "/process_apix", None, "c1", false).is_err());
    }

    #[test]
    fn pure_v2_uses_parent_of_own_cgroup() {
        let m = CgroupMount {
            root: "/".into(),
            mount_point: "/sys/fs/cgroup".into(),
            v2: true,
            controllers: vec![],
        };
        assert_eq!(
            container_dir(&m, "/user.slice/s.scope", None, "c1", true).unwrap(),
            Path::new("/sys/fs/cgroup/user.slice/c1")
        );
        assert_eq!(
            container_dir(&m, "/", None, "c1", true).unwrap(),
            Path::new("/sys/fs/cgroup/c1")
        );
    }
}
