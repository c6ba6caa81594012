//! cgroups v1 and v2 behind one interface.
//!
//! The layout (pure v1, hybrid, pure v2) is read from /proc/self/mountinfo; a relative or
//! absent cgroupsPath nests beneath the caller's own cgroup in each hierarchy, as runc does.
//! lrun only ever creates and removes the container's own directories: it never writes to
//! the caller's cgroups and never moves a process out of them (see runtime-spec/cgroups.md).

pub mod bpf;
pub mod devices;
mod fs;
pub mod layout;
pub mod oom;
pub mod stats;
mod v1;
mod v2;

#[cfg(test)]
mod kernel_tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use oci_spec::runtime::{LinuxRdma, LinuxResources};
use serde::{Deserialize, Serialize};

pub use layout::Mode;
pub use stats::Stats;

use crate::logging;

/// The container's directory in one v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1Dir {
    /// The hierarchy's controllers, e.g. ["cpu", "cpuacct"] or ["name=systemd"].
    pub controllers: Vec<String>,
    pub path: PathBuf,
}

impl V1Dir {
    /// Named hierarchies (name=systemd) carry no limits: failing to join one is not fatal.
    fn optional(&self) -> bool {
        self.controllers.iter().all(|c| c.starts_with("name="))
    }
}

/// The cgroups of one container; stored in the container's state so `delete` can find them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manager {
    #[serde(default)]
    pub mode: Mode,
    /// One directory per mounted v1 hierarchy (legacy and hybrid layouts).
    #[serde(default)]
    pub v1: Vec<V1Dir>,
    /// The container's cgroup2 directory: where limits live on pure v2, process tracking
    /// only in a hybrid layout (best effort there).
    #[serde(default)]
    pub unified: Option<PathBuf>,
    /// The cgroup2 mount point, to enable controllers on the way down (pure v2).
    #[serde(default)]
    pub unified_mount: Option<PathBuf>,
}

/// Format `linux.resources.rdma` as lines of rdma.max (same syntax on v1 and v2).
pub(crate) fn rdma_lines(rdma: &HashMap<String, LinuxRdma>) -> Vec<String> {
    let mut devs: Vec<_> = rdma.iter().collect();
    devs.sort_by(|a, b| a.0.cmp(b.0));
    devs.into_iter()
        .filter_map(|(dev, l)| {
            let mut line = dev.clone();
            if let Some(h) = l.hca_handles() {
                line.push_str(&format!(" hca_handle={h}"));
            }
            if let Some(o) = l.hca_objects() {
                line.push_str(&format!(" hca_object={o}"));
            }
            (line.len() > dev.len()).then_some(line)
        })
        .collect()
}

impl Manager {
    /// Work out where the container's cgroups go (no file is written). A relative or absent
    /// `cgroups_path` nests beneath the caller's own cgroup in each hierarchy, as runc does.
    pub fn new(cgroups_path: Option<&Path>, id: &str) -> Result<Self> {
        let mountinfo =
            std::fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
        let own = std::fs::read_to_string("/proc/self/cgroup").context("read /proc/self/cgroup")?;
        let h = layout::detect(&mountinfo, &own)?;
        Self::from_hierarchies(&h, cgroups_path, id)
    }

    /// `new` on a given layout (tests use made-up ones).
    pub fn from_hierarchies(
        h: &layout::Hierarchies,
        cgroups_path: Option<&Path>,
        id: &str,
    ) -> Result<Self> {
        let mut m = Manager {
            mode: h.mode,
            ..Default::default()
        };
        for hier in &h.v1 {
            let path = layout::container_dir(&hier.mount, &hier.own_path, cgroups_path, id, false)?;
            m.v1.push(V1Dir {
                controllers: hier.controllers.clone(),
                path,
            });
        }
        if let Some((mount, own)) = &h.v2 {
            let pure = h.mode == Mode::Unified;
            m.unified = Some(layout::container_dir(mount, own, cgroups_path, id, pure)?);
            m.unified_mount = Some(mount.mount_point.clone());
        }
        Ok(m)
    }

    /// Every directory of this container, v1 ones first.
    pub fn paths(&self) -> Vec<&Path> {
        let mut out: Vec<&Path> = self.v1.iter().map(|d| d.path.as_path()).collect();
        out.extend(self.unified.as_deref());
        out
    }

    pub fn v1_dir(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|d| d.controllers.iter().any(|c| c == controller))
            .map(|d| d.path.as_path())
    }

    /// The cgroup2 directory that carries limits (pure v2 only).
    fn v2_dir(&self) -> Option<&Path> {
        match self.mode {
            Mode::Unified => self.unified.as_deref(),
            _ => None,
        }
    }

    /// Create the directories (before any process joins).
    pub fn create(&self) -> Result<()> {
        // destroy kills everything inside: never adopt a cgroup that already holds processes
        // (a cgroupsPath naming someone else's cgroup, or our own).
        for dir in self.paths() {
            if dir.exists() && !fs::procs(dir, true)?.is_empty() {
                bail!(
                    "cgroup {} already exists and has processes: refusing to take it over",
                    dir.display()
                );
            }
        }
        for d in &self.v1 {
            let created = match fs::mkdir_all(&d.path) {
                Ok(c) => c,
                Err(e) if d.optional() => {
                    logging::debug(&format!("skipping cgroup {}: {e:#}", d.path.display()));
                    continue;
                }
                Err(e) => return Err(e),
            };
            if d.controllers.iter().any(|c| c == "cpuset") {
                // A new v1 cpuset starts empty and refuses tasks until filled in.
                for dir in &created {
                    init_cpuset(dir)?;
                }
            }
        }
        match (self.mode, &self.unified) {
            (Mode::Unified, Some(leaf)) => {
                if let Some(parent) = leaf.parent() {
                    fs::mkdir_all(parent)?;
                }
                if let Some(mount) = &self.unified_mount {
                    v2::enable_controllers(mount, leaf)?;
                }
                fs::mkdir_all(leaf)?;
            }
            (Mode::Hybrid, Some(leaf)) => {
                if let Err(e) = fs::mkdir_all(leaf) {
                    logging::debug(&format!("no cgroup2 directory in hybrid layout: {e:#}"));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Apply limits at create time: resources plus the device list (defaults included).
    pub fn set(&self, resources: &LinuxResources) -> Result<()> {
        self.set_with_devices(resources, &[])
    }

    /// `set`, also allowing the devices a container's config lists in linux.devices.
    pub fn set_with_devices(
        &self,
        resources: &LinuxResources,
        extra_allowed: &[devices::Rule],
    ) -> Result<()> {
        let config = resources.devices().as_deref().unwrap_or(&[]);
        let rules = devices::effective_rules(config, extra_allowed)?;
        self.apply(resources, Some(&rules))
    }

    /// Change limits of a running container (`lrun update`): only the fields given are
    /// written; the device list is left alone.
    pub fn update(&self, resources: &LinuxResources) -> Result<()> {
        self.apply(resources, None)
    }

    fn apply(&self, r: &LinuxResources, rules: Option<&[devices::Rule]>) -> Result<()> {
        match self.mode {
            Mode::None => {
                if has_limits(r) {
                    bail!("no cgroup filesystem is mounted: cannot apply linux.resources");
                }
                Ok(())
            }
            Mode::Legacy | Mode::Hybrid => {
                v1::set(self, r, rules)?;
                if let Some(u) = r.unified().as_ref().filter(|u| !u.is_empty()) {
                    match (&self.unified, self.mode) {
                        (Some(dir), Mode::Hybrid) if dir.exists() => v2::unified(dir, u)?,
                        _ => bail!("linux.resources.unified needs cgroup v2, not available here"),
                    }
                }
                Ok(())
            }
            Mode::Unified => {
                let dir = self.v2_dir().context("cgroup2 directory not computed")?;
                v2::set(dir, r, rules)
            }
        }
    }

    /// Move a process into the container's cgroups.
    pub fn add_pid(&self, pid: i32) -> Result<()> {
        let pid_s = pid.to_string();
        for d in &self.v1 {
            if let Err(e) = fs::write(&d.path, "cgroup.procs", &pid_s) {
                if d.optional() && !d.path.exists() {
                    continue;
                }
                return Err(e);
            }
        }
        if let Some(u) = &self.unified
            && let Err(e) = fs::write(u, "cgroup.procs", &pid_s)
            // In a hybrid layout the cgroup2 directory is best effort.
            && (self.mode == Mode::Unified || u.exists())
        {
            return Err(e);
        }
        Ok(())
    }

    /// Kill what is left inside and remove the directories, deepest first. Idempotent.
    pub fn destroy(&self) -> Result<()> {
        if self.mode == Mode::None {
            return Ok(());
        }
        self.kill_all()?;
        let mut first_err = None;
        for dir in self.paths() {
            if let Err(e) = fs::remove_tree(dir) {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// SIGKILL every process in the container's cgroups and wait until they are gone.
    pub fn kill_all(&self) -> Result<()> {
        self.kill_all_but(std::process::id() as i32)
    }

    /// `kill_all`, refusing to act if `me` is inside: then these are not a container's own
    /// cgroups (a cgroupsPath naming one of ours) and "everything inside" includes us.
    fn kill_all_but(&self, me: i32) -> Result<()> {
        let refuse = |pids: &[i32]| -> Result<()> {
            if pids.contains(&me) {
                bail!(
                    "process {me} (lrun) is inside {}: refusing to kill every process there",
                    self.describe()
                );
            }
            Ok(())
        };
        refuse(&self.all_pids()?)?;
        if let Some(u) = &self.unified
            && fs::exists(u, "cgroup.kill")
        {
            // One write kills the whole subtree, forks in flight included (Linux 5.14+).
            let _ = fs::write(u, "cgroup.kill", "1");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut delay = Duration::from_micros(200);
        loop {
            let pids = self.all_pids()?;
            refuse(&pids)?;
            // Frozen tasks only die once thawed.
            if self.is_frozen().unwrap_or(false) {
                self.thaw()?;
            }
            if pids.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("processes {pids:?} survive SIGKILL in {}", self.describe());
            }
            for pid in pids {
                // SAFETY: kill(2) has no memory effects; ESRCH (already gone) is fine.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(50));
        }
    }

    fn describe(&self) -> String {
        self.paths()
            .first()
            .map_or_else(|| "no cgroup".into(), |p| p.display().to_string())
    }

    /// The directory that freezes: v1 freezer, else cgroup2's cgroup.freeze.
    fn freezer(&self) -> Option<(bool, &Path)> {
        if let Some(d) = self.v1_dir("freezer") {
            return Some((true, d));
        }
        self.unified.as_deref().map(|d| (false, d))
    }

    pub fn freeze(&self) -> Result<()> {
        match self.freezer() {
            Some((true, d)) => v1::freeze(d),
            Some((false, d)) => v2::freeze(d),
            None => bail!("no freezer: neither the v1 freezer nor cgroup2 is mounted"),
        }
    }

    pub fn thaw(&self) -> Result<()> {
        match self.freezer() {
            Some((true, d)) => v1::thaw(d),
            Some((false, d)) => v2::thaw(d),
            None => bail!("no freezer: neither the v1 freezer nor cgroup2 is mounted"),
        }
    }

    pub fn is_frozen(&self) -> Result<bool> {
        match self.freezer() {
            Some((true, d)) => v1::is_frozen(d),
            Some((false, d)) => v2::is_frozen(d),
            None => Ok(false),
        }
    }

    /// The hierarchy whose cgroup.procs lists the container's processes.
    fn tracking_dir(&self) -> Option<&Path> {
        if self.mode == Mode::Unified {
            return self.unified.as_deref();
        }
        ["pids", "freezer", "memory", "devices", "cpu"]
            .iter()
            .find_map(|c| self.v1_dir(c))
            .or_else(|| self.v1.first().map(|d| d.path.as_path()))
            .or(self.unified.as_deref())
    }

    /// Pids of every process in the container's cgroups (sub-cgroups included).
    pub fn pids(&self) -> Result<Vec<i32>> {
        match self.tracking_dir() {
            Some(d) => fs::procs(d, true),
            None => Ok(Vec::new()),
        }
    }

    /// Pids in any of the container's directories: destroy must not miss one that moved.
    fn all_pids(&self) -> Result<Vec<i32>> {
        let mut all = Vec::new();
        for d in self.paths() {
            all.extend(fs::procs(d, true)?);
        }
        all.sort_unstable();
        all.dedup();
        Ok(all)
    }

    /// Resource usage in runc's `events --stats` shape.
    pub fn stats(&self) -> Result<Stats> {
        match self.mode {
            Mode::None => Ok(Stats::default()),
            Mode::Legacy | Mode::Hybrid => v1::stats(self),
            Mode::Unified => match self.v2_dir() {
                Some(d) => v2::stats(d),
                None => Ok(Stats::default()),
            },
        }
    }

    /// Processes killed by the OOM killer in this container so far.
    pub fn oom_kills(&self) -> Result<u64> {
        Ok(self
            .stats()?
            .memory
            .raw
            .get("oom_kill")
            .copied()
            .unwrap_or(0))
    }
}

/// Does `r` ask for anything a cgroup would have to enforce?
fn has_limits(r: &LinuxResources) -> bool {
    r.memory().is_some()
        || r.cpu().is_some()
        || r.pids().is_some_and(|p| p.limit() > 0)
        || r.block_io().is_some()
        || r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty())
        || r.unified().as_ref().is_some_and(|u| !u.is_empty())
}

/// Copy cpuset.cpus and cpuset.mems from the parent into a new (empty) v1 cpuset.
fn init_cpuset(dir: &Path) -> Result<()> {
    let parent = dir
        .parent()
        .with_context(|| format!("{} has no parent", dir.display()))?;
    for file in ["cpuset.cpus", "cpuset.mems"] {
        if fs::read(dir, file)?.trim().is_empty() {
            let value = fs::read(parent, file)?;
            fs::write(dir, file, value.trim())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manager_paths_follow_the_layout() {
        let mi = "\
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
        let own = "9:name=systemd:/\n4:memory:/process_api/abc\n0::/\n";
        let h = layout::detect(mi, own).unwrap();
        let m = Manager::from_hierarchies(&h, None, "c1").unwrap();
        assert_eq!(m.mode, Mode::Hybrid);
        assert_eq!(
            m.v1_dir("memory"),
            Some(Path::new("/sys/fs/cgroup/memory/process_api/abc/c1"))
        );
        assert_eq!(
            m.unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified/c1"))
        );
        assert!(m.v1.iter().any(|d| d.optional()));
        assert!(m.v2_dir().is_none(), "hybrid limits live in v1");
        let json = serde_json::to_string(&m).unwrap();
        let back: Manager = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn default_manager_is_inert() {
        let m = Manager::default();
        assert!(m.pids().unwrap().is_empty());
        assert!(!m.is_frozen().unwrap());
        m.destroy().unwrap();
        m.create().unwrap();
        m.set(&LinuxResources::default()).unwrap();
        let old_state: Manager = serde_json::from_str(r#"{"paths":[]}"#).unwrap();
        assert_eq!(old_state, m);
    }

    #[test]
    fn rdma_limits_format() {
        use oci_spec::runtime::LinuxRdmaBuilder;
        let r: HashMap<String, LinuxRdma> = [
            (
                "mlx5_1".to_string(),
                LinuxRdmaBuilder::default()
                    .hca_handles(3u32)
                    .build()
                    .unwrap(),
            ),
            (
                "mlx4_0".to_string(),
                LinuxRdmaBuilder::default()
                    .hca_handles(2u32)
                    .hca_objects(2000u32)
                    .build()
                    .unwrap(),
            ),
        ]
        .into();
        assert_eq!(
            rdma_lines(&r),
            ["mlx4_0 hca_handle=2 hca_object=2000", "mlx5_1 hca_handle=3"]
        );
    }
}
