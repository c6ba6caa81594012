//! cgroups behind one driver seam: the `CgroupDriver` trait, the cgroupfs drivers for v1
//! (legacy and hybrid layouts, `v1.rs`) and v2 (unified, `v2.rs`), a driver for hosts without
//! cgroups (`none.rs`), and the factory that picks one.
//!
//! The layout (pure v1, hybrid, pure v2) is read from /proc/self/mountinfo; a relative or
//! absent cgroupsPath nests beneath the caller's own cgroup in each hierarchy, as runc does.
//! lrun only ever creates and removes the container's own directories: it never writes to
//! the caller's cgroups and never moves a process out of them (see runtime-spec/cgroups.md).
//!
//! state.json keeps a `CgroupRecord` (driver kind and paths), never a driver: `new_driver`
//! makes the driver at create time, `open_driver` rebuilds it from the record for every later
//! command. `--systemd-cgroup` picks the systemd driver (`systemd.rs`): a transient scope
//! that systemd owns, whose directories are then handled by the cgroupfs code.

pub mod bpf;
pub mod devices;
mod fs;
pub mod layout;
mod none;
pub mod oom;
pub mod stats;
pub mod systemd;
mod v1;
mod v2;

#[cfg(test)]
mod kernel_tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxRdma, LinuxResources};

pub use crate::cgroup_record::{CgroupRecord, DriverKind, V1Dir};
pub use layout::Mode;
pub use stats::Stats;

use oom::OomWatcher;

/// What every cgroup driver does for a container. The driver owns where the container's
/// cgroups are and how they are made, limited and removed; the shared behaviour (set,
/// update, kill everything, destroy) is built here on the few required methods.
pub trait CgroupDriver: Debug {
    /// The plain record state.json keeps, from which `open_driver` rebuilds this driver.
    fn record(&self) -> CgroupRecord;

    /// Every directory of this container (where its processes can be).
    fn paths(&self) -> Vec<&Path>;

    /// The cgroup2 directory of the container, if it has one: `cgroup.kill` there ends the
    /// whole subtree at once.
    fn cgroup2_dir(&self) -> Option<&Path>;

    /// Refuse a target cgroup no container may start in, before any cgroup is made
    /// (runc's checks in its factory's Create): one that already holds processes (destroy
    /// would kill them) or one that is frozen or freezing, itself or through an ancestor (the
    /// init would hang there). `create` runs it too; the engine calls it before its
    /// cleanup owns the cgroup, so that a refusal never destroys the cgroup.
    fn preflight(&self) -> Result<()>;

    /// Create the cgroups (before any process joins).
    fn create(&self) -> Result<()>;

    /// Write limits: every field given in `r`, and the device list when `devices` is given.
    fn apply(&self, r: &LinuxResources, devices: Option<&[devices::Rule]>) -> Result<()>;

    /// Move a process into the container's cgroups.
    fn add_pid(&self, pid: i32) -> Result<()>;

    /// Put the container's first process in its cgroups (when it was not born there). The
    /// create-time limits are in force already (`set_for_create`), except for systemd, which
    /// needs the process to make its scope and sets them with it.
    fn start(&self, pid: i32, _resources: &LinuxResources) -> Result<()> {
        self.add_pid(pid)
    }

    /// The create-time limits (resources plus the device list, defaults included), written
    /// before any container process exists. systemd: nothing yet (see `start`).
    fn set_for_create(&self, resources: &LinuxResources) -> Result<()> {
        // Only the default devices are allowed implicitly: linux.devices follow
        // resources.devices.
        self.set_with_devices(resources, &[])
    }

    /// The cgroup2 directory a new process can be born in (clone3 with CLONE_INTO_CGROUP)
    /// when that alone puts it in every cgroup of the container: pure cgroup v2 only.
    fn birth_cgroup(&self) -> Option<&Path> {
        None
    }

    /// Where a process goes to run in existing sub-cgroups of the container's (runc's
    /// `exec --cgroup`), as a record for `open_driver` whose `add_pid` joins them (only that:
    /// it is no container's record). Nothing is checked on disk.
    fn sub_cgroup(&self, sub: &SubCgroups) -> Result<CgroupRecord>;

    fn freeze(&self) -> Result<()>;
    fn thaw(&self) -> Result<()>;
    fn is_frozen(&self) -> Result<bool>;

    /// Pids of every process in the container's cgroups (sub-cgroups included).
    fn pids(&self) -> Result<Vec<i32>>;

    /// Resource usage in runc's `events --stats` shape.
    fn stats(&self) -> Result<Stats>;

    /// A watcher for OOM kills, or None when the container has no memory cgroup to watch.
    fn oom_watcher(&self) -> Result<Option<OomWatcher>>;

    /// Apply limits at create time: resources plus the device list (defaults included).
    fn set(&self, resources: &LinuxResources) -> Result<()> {
        self.set_with_devices(resources, &[])
    }

    /// `set`, also allowing the devices a container's config lists in linux.devices.
    fn set_with_devices(
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
    fn update(&self, resources: &LinuxResources) -> Result<()> {
        self.apply(resources, None)
    }

    /// Kill what is left inside and remove the directories, deepest first. Idempotent.
    fn destroy(&self) -> Result<()> {
        let dirs = self.paths();
        if dirs.is_empty() || remove_if_empty(&dirs) {
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
    fn kill_all(&self) -> Result<()> {
        kill_all_but(self, std::process::id() as i32)
    }

    /// Processes killed by the OOM killer in this container so far.
    fn oom_kills(&self) -> Result<u64> {
        Ok(self
            .stats()?
            .memory
            .raw
            .get("oom_kill")
            .copied()
            .unwrap_or(0))
    }
}

/// Sub-cgroups of a container's cgroup, by controller (runc's `exec --cgroup
/// [CONTROLLER[,CONTROLLER...]:]PATH`): the key "" is every hierarchy (and the only key
/// cgroup v2 takes); paths are below the container's cgroup.
pub type SubCgroups = BTreeMap<String, String>;

/// `base` joined with `sub` as runc does (Go's path.Join: lexical, a leading / is dropped),
/// refused if it leaves `base`.
pub fn sub_dir(base: &Path, sub: &str) -> Result<PathBuf> {
    let mut rel = PathBuf::new();
    for c in Path::new(sub).components() {
        match c {
            Component::Normal(n) => rel.push(n),
            Component::ParentDir if rel.pop() => {}
            Component::ParentDir => bail!("bad sub cgroup path: {sub}"),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(base.join(rel))
}

/// The driver for a new container on this host: works out where its cgroups go (no file is
/// written). A relative or absent `cgroups_path` nests beneath the caller's own cgroup in
/// each hierarchy, as runc does.
pub fn new_driver(cgroups_path: Option<&Path>, id: &str) -> Result<Box<dyn CgroupDriver>> {
    let mountinfo = crate::mountinfo::read_self()?;
    let own = std::fs::read_to_string("/proc/self/cgroup").context("read /proc/self/cgroup")?;
    let h = layout::detect(&mountinfo, &own)?;
    driver_for_layout(&h, cgroups_path, id)
}

/// The systemd driver for a new container (`--systemd-cgroup`): works out the scope and its
/// directories, and makes sure systemd answers on the system bus, so that a host without it
/// fails here, before anything is made. `root` is the state root, named in the scope's
/// Description for `gc`.
pub fn new_systemd_driver(
    cgroups_path: Option<&Path>,
    id: &str,
    root: &Path,
) -> Result<Box<dyn CgroupDriver>> {
    let mountinfo = crate::mountinfo::read_self()?;
    let own = std::fs::read_to_string("/proc/self/cgroup").context("read /proc/self/cgroup")?;
    let h = layout::detect(&mountinfo, &own)?;
    let init = std::fs::read_to_string("/proc/1/cgroup").context("read /proc/1/cgroup")?;
    let d = systemd::SystemdDriver::for_layout(&h, &init, cgroups_path, id, root)?;
    // create forks without exec: the bus's helper thread must be gone before that.
    systemd::Bus::connect().context("--systemd-cgroup")?.close();
    Ok(Box::new(d))
}

/// `new_driver` on a given layout (tests use made-up ones).
pub fn driver_for_layout(
    h: &layout::Hierarchies,
    cgroups_path: Option<&Path>,
    id: &str,
) -> Result<Box<dyn CgroupDriver>> {
    Ok(match h.mode {
        Mode::None => Box::new(none::NoCgroups),
        Mode::Legacy | Mode::Hybrid => Box::new(v1::V1Driver::for_layout(h, cgroups_path, id)?),
        Mode::Unified => Box::new(v2::V2Driver::for_layout(h, cgroups_path, id)?),
    })
}

/// The driver that manages the cgroups `record` describes (any later command: delete,
/// kill --all, exec, pause, update, events, ps).
pub fn open_driver(record: &CgroupRecord) -> Result<Box<dyn CgroupDriver>> {
    Ok(match record.driver {
        DriverKind::None => Box::new(none::NoCgroups),
        DriverKind::CgroupfsV1 => Box::new(v1::V1Driver::from_record(record)),
        DriverKind::CgroupfsV2 => Box::new(v2::V2Driver::from_record(record)?),
        DriverKind::Systemd => Box::new(systemd::SystemdDriver::from_record(record)?),
    })
}

/// Is the container whose cgroups `record` describes frozen? (`state` asks this to tell
/// paused from running; unreadable counts as not frozen, as before the seam.)
pub fn is_frozen(record: &CgroupRecord) -> bool {
    open_driver(record)
        .and_then(|d| d.is_frozen())
        .unwrap_or(false)
}

/// `kill_all`, refusing to act if `me` is inside: then these are not a container's own
/// cgroups (a cgroupsPath naming one of ours) and "everything inside" includes us.
fn kill_all_but<D: CgroupDriver + ?Sized>(d: &D, me: i32) -> Result<()> {
    let describe = || {
        d.paths()
            .first()
            .map_or_else(|| "no cgroup".into(), |p| p.display().to_string())
    };
    let refuse = |pids: &[i32]| -> Result<()> {
        if pids.contains(&me) {
            bail!(
                "process {me} (lrun) is inside {}: refusing to kill every process there",
                describe()
            );
        }
        Ok(())
    };
    refuse(&all_pids(d)?)?;
    if let Some(u) = d.cgroup2_dir()
        && fs::exists(u, "cgroup.kill")
    {
        // One write kills the whole subtree, forks in flight included (Linux 5.14+).
        let _ = fs::write(u, "cgroup.kill", "1");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut delay = Duration::from_micros(200);
    loop {
        let pids = all_pids(d)?;
        refuse(&pids)?;
        // Frozen tasks only die once thawed.
        if d.is_frozen().unwrap_or(false) {
            d.thaw()?;
        }
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("processes {pids:?} survive SIGKILL in {}", describe());
        }
        for pid in pids {
            // ESRCH (already gone) is fine.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

/// `destroy`'s common case in one rmdir per directory: a container that has exited leaves
/// cgroups with no process and no child cgroup, and the kernel removes exactly those (a
/// populated cgroup, or one with children, fails with EBUSY). True when every directory is
/// gone; otherwise the full path (kill, wait, remove deepest first) deals with what is left,
/// and the directories removed here are simply absent to it. Saves the cgroup.procs reads
/// and directory listings of every hierarchy, twice over (~200 syscalls on cgroup v1).
fn remove_if_empty(dirs: &[&Path]) -> bool {
    let mut all = true;
    for dir in dirs {
        match std::fs::remove_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => all = false,
        }
    }
    all
}

/// `dir` if it exists, else its nearest existing ancestor: a new cgroup inherits that one's
/// frozen state.
fn nearest_existing(dir: &Path) -> Option<&Path> {
    dir.ancestors().find(|d| d.exists())
}

/// `preflight`'s refusal of a populated target cgroup, in runc's words.
fn refuse_populated(dir: &Path) -> Result<()> {
    if dir.exists() {
        let n = fs::procs(dir, true)?.len();
        if n > 0 {
            bail!(
                "container's cgroup is not empty: {n} process(es) found in {}",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Pids in any of the container's directories: destroy must not miss one that moved.
fn all_pids<D: CgroupDriver + ?Sized>(d: &D) -> Result<Vec<i32>> {
    let mut all = Vec::new();
    for dir in d.paths() {
        all.extend(fs::procs(dir, true)?);
    }
    all.sort_unstable();
    all.dedup();
    Ok(all)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_paths_follow_the_layout() {
        let mi = "\
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
        let own = "9:name=systemd:/\n4:memory:/process_api/abc\n0::/\n";
        let h = layout::detect(mi, own).unwrap();
        let d = driver_for_layout(&h, None, "c1").unwrap();
        let r = d.record();
        assert_eq!(r.driver, DriverKind::CgroupfsV1, "hybrid limits live in v1");
        assert_eq!(
            r.v1_dir("memory"),
            Some(Path::new("/sys/fs/cgroup/memory/process_api/abc/c1"))
        );
        assert_eq!(
            r.unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified/c1"))
        );
        assert_eq!(
            d.cgroup2_dir(),
            Some(Path::new("/sys/fs/cgroup/unified/c1"))
        );
        // What state.json keeps opens the same driver again.
        let json = serde_json::to_string(&r).unwrap();
        let back: CgroupRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(open_driver(&back).unwrap().record(), r);

        let v2 = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let h = layout::detect(v2, "0::/user.slice/s.scope\n").unwrap();
        let r = driver_for_layout(&h, None, "c1").unwrap().record();
        assert_eq!(r.driver, DriverKind::CgroupfsV2);
        assert_eq!(
            r.unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/user.slice/c1"))
        );
        assert_eq!(
            r.unified_mount.as_deref(),
            Some(Path::new("/sys/fs/cgroup"))
        );
        assert_eq!(open_driver(&r).unwrap().record(), r);
    }

    #[test]
    fn sub_cgroups_stay_below_the_container() {
        let base = Path::new("/sys/fs/cgroup/memory/c1");
        assert_eq!(sub_dir(base, "/").unwrap(), base);
        assert_eq!(sub_dir(base, "a/./b").unwrap(), base.join("a/b"));
        assert_eq!(sub_dir(base, "/a/../b").unwrap(), base.join("b"));
        for bad in ["..", "a/../..", "/../c2"] {
            let err = sub_dir(base, bad).unwrap_err().to_string();
            assert_eq!(err, format!("bad sub cgroup path: {bad}"));
        }

        let mi = "\
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
        let own = "4:memory:/\n3:cpu,cpuacct:/\n0::/\n";
        let d = driver_for_layout(&layout::detect(mi, own).unwrap(), None, "c1").unwrap();
        let sub = |pairs: &[(&str, &str)]| -> SubCgroups {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let r = d
            .sub_cgroup(&sub(&[("memory", "m"), ("cpu", "c")]))
            .unwrap();
        assert_eq!(
            r.v1_dir("memory"),
            Some(Path::new("/sys/fs/cgroup/memory/c1/m"))
        );
        assert_eq!(
            r.v1_dir("cpuacct"),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct/c1/c"))
        );
        assert_eq!(r.unified, d.record().unified, "cgroup2 stays at the top");
        let r = d.sub_cgroup(&sub(&[("", "s")])).unwrap();
        assert_eq!(
            r.v1_dir("memory"),
            Some(Path::new("/sys/fs/cgroup/memory/c1/s"))
        );
        assert_eq!(
            r.v1_dir("cpu"),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct/c1/s"))
        );
        let err = d.sub_cgroup(&sub(&[("whaaat", "/")])).unwrap_err();
        assert!(
            err.to_string().contains("unknown controller whaaat"),
            "{err}"
        );

        let v2 = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let d = driver_for_layout(&layout::detect(v2, "0::/\n").unwrap(), None, "c1").unwrap();
        let r = d.sub_cgroup(&sub(&[("", "x/y")])).unwrap();
        assert_eq!(
            r.unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/c1/x/y"))
        );
        assert!(d.sub_cgroup(&sub(&[("memory", "m")])).is_err());
        assert!(d.sub_cgroup(&sub(&[("", "..")])).is_err());
    }

    #[test]
    fn no_cgroups_driver_is_inert() {
        // The oldest state.json form reads as "no cgroups".
        let old_state: CgroupRecord = serde_json::from_str(r#"{"paths":[]}"#).unwrap();
        let d = open_driver(&old_state).unwrap();
        assert_eq!(d.record(), CgroupRecord::default());
        assert!(d.pids().unwrap().is_empty());
        assert!(!d.is_frozen().unwrap());
        assert!(!is_frozen(&old_state));
        d.destroy().unwrap();
        d.create().unwrap();
        d.set(&LinuxResources::default()).unwrap();
        assert!(d.freeze().is_err());
    }

    #[test]
    fn a_v2_record_without_its_directory_is_refused() {
        let r = CgroupRecord {
            driver: DriverKind::CgroupfsV2,
            ..Default::default()
        };
        assert!(open_driver(&r).is_err());
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
