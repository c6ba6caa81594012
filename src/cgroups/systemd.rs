//! The systemd cgroup driver (`--systemd-cgroup`): the container runs in a transient scope
//! that systemd creates and owns, as runc's systemd driver does.
//!
//! - cgroupsPath is `slice:prefix:name` and names the scope `prefix-name.scope` in `slice`
//!   (absent: `lrun-ID.scope` in system.slice). Where the scope's directories are follows
//!   from that alone (systemd's slice naming, `a-b.slice` inside `a.slice`), so state.json
//!   records them before the scope exists.
//! - The scope is made with StartTransientUnit once the container's first process exists
//!   (systemd needs a pid): PIDs, Delegate=yes, Slice, Description, accounting, and the
//!   limits as unit properties (`props.rs`). Then the directories systemd does not make (on
//!   v1: cpuset, freezer, net_cls... stay at `/` in a delegated scope) are made and joined by
//!   lrun, and every limit is written through the filesystem as well, since systemd has no
//!   property for some (swappiness, v1 cpuset, hugetlb, unified, ...).
//! - `update` sets the properties (runtime) and writes the files; pause, stats, ps, exec
//!   and events use the directories as the cgroupfs drivers do (`fs`).
//! - `delete` kills what is left, stops the scope and removes the directories lrun made.
//! - A scope's Description is `lrun container ID root=STATE_ROOT`: `gc` stops the scopes of
//!   its root whose container no longer exists (`orphan_scopes`).

mod bus;
mod props;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use oci_spec::runtime::LinuxResources;

use super::devices::{self, Rule};
use super::fs;
use super::layout::{self, CgroupMount, Hierarchies, Mode};
use super::oom::OomWatcher;
use super::{CgroupDriver, CgroupRecord, DriverKind, Stats, SubCgroups};
use crate::logging;

pub use bus::Bus;

/// The slice a scope goes to when cgroupsPath names none (runc's default too).
pub const DEFAULT_SLICE: &str = "system.slice";
/// The scope prefix when there is no cgroupsPath (runc uses "runc").
pub const DEFAULT_PREFIX: &str = "lrun";
/// What every scope lrun makes says first in its Description.
const DESCRIPTION_PREFIX: &str = "lrun container ";

/// Where a container's scope goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitPath {
    pub slice: String,
    pub unit: String,
}

/// runc's reading of cgroupsPath under the systemd driver.
pub fn unit_path(cgroups_path: Option<&Path>, id: &str) -> Result<UnitPath> {
    let raw = match cgroups_path {
        Some(p) => p
            .to_str()
            .with_context(|| format!("linux.cgroupsPath {}: not UTF-8", p.display()))?,
        None => "",
    };
    let (slice, prefix, name) = if raw.is_empty() {
        (DEFAULT_SLICE, DEFAULT_PREFIX, id)
    } else {
        let parts: Vec<&str> = raw.split(':').collect();
        let [slice, prefix, name] = parts[..] else {
            bail!(
                "expected cgroupsPath to be of format \"slice:prefix:name\" for systemd cgroups, got {raw:?} instead"
            );
        };
        (
            if slice.is_empty() {
                DEFAULT_SLICE
            } else {
                slice
            },
            prefix,
            name,
        )
    };
    let bad = |what: &str| format!("linux.cgroupsPath {raw:?}: {what}");
    if name.is_empty() {
        bail!(bad("the name (after the second ':') is empty"));
    }
    if name.ends_with(".slice") {
        bail!(bad(
            "a name ending in .slice asks for a slice unit; lrun only makes scopes"
        ));
    }
    expand_slice(slice).with_context(|| bad(&format!("invalid slice {slice:?}")))?;
    // runc's naming, including "-name.scope" for an empty prefix.
    let unit = format!("{prefix}-{name}.scope");
    if let Some(c) = unit.chars().find(|&c| !valid_unit_char(c)) {
        bail!(bad(&format!("{c:?} is not allowed in a systemd unit name")));
    }
    if unit.len() > 255 {
        bail!(bad("the unit name would be longer than 255 bytes"));
    }
    Ok(UnitPath {
        slice: slice.to_string(),
        unit,
    })
}

/// systemd's unit name characters (no '@': that would make a template instance).
fn valid_unit_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '\\')
}

/// The cgroup path of a slice: `a-b.slice` is `/a.slice/a-b.slice`, `-.slice` is `/`.
pub fn expand_slice(slice: &str) -> Result<String> {
    let Some(stem) = slice.strip_suffix(".slice") else {
        bail!("a slice name ends in .slice");
    };
    if stem.is_empty() || slice.contains('/') {
        bail!("not a slice name");
    }
    if stem == "-" {
        return Ok("/".into());
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        if part.is_empty() {
            bail!("empty component between '-'");
        }
        if let Some(c) = part.chars().find(|&c| !valid_unit_char(c)) {
            bail!("{c:?} is not allowed in a slice name");
        }
        path.push('/');
        path.push_str(&prefix);
        path.push_str(part);
        path.push_str(".slice");
        prefix.push_str(part);
        prefix.push('-');
    }
    Ok(path)
}

/// The Description that marks a scope as lrun's, for container `id` of state root `root`.
pub fn description(id: &str, root: &Path) -> String {
    format!("{DESCRIPTION_PREFIX}{id} root={}", root.display())
}

/// The container id and state root in a Description of ours.
pub fn parse_description(d: &str) -> Option<(&str, &Path)> {
    let (id, root) = d.strip_prefix(DESCRIPTION_PREFIX)?.split_once(" root=")?;
    Some((id, Path::new(root)))
}

/// The directory of `unit` in one hierarchy: beneath systemd's own root there (PID 1's
/// cgroup without init.scope, "/" on a host), the slice's path, the unit.
fn scope_dir(mount: &CgroupMount, init_path: &str, slice_path: &str, unit: &str) -> PathBuf {
    let base = init_path
        .trim_end_matches('/')
        .trim_end_matches("init.scope")
        .trim_end_matches('/');
    let full = format!("{base}{slice_path}/{unit}");
    let full = full.replace("//", "/");
    let rel = match mount.root.as_str() {
        "/" => full.as_str(),
        root => full.strip_prefix(root).unwrap_or(&full),
    };
    mount.mount_point.join(rel.trim_start_matches('/'))
}

/// PID 1's path in the hierarchy with `controllers` (empty: cgroup2), "/" if not listed.
fn init_path<'a>(init: &'a [layout::OwnCgroup], controllers: &[String]) -> &'a str {
    init.iter()
        .find(|o| {
            if controllers.is_empty() {
                o.hierarchy == 0
            } else {
                o.controllers.len() == controllers.len()
                    && o.controllers.iter().all(|c| controllers.contains(c))
            }
        })
        .map_or("/", |o| o.path.as_str())
}

#[derive(Debug)]
pub struct SystemdDriver {
    unit: String,
    /// Where the scope goes and what it says it is: needed only to start it.
    slice: String,
    description: String,
    /// The scope's directories, handled as the cgroupfs driver of the layout would.
    fs: Box<dyn CgroupDriver>,
    bus: OnceLock<Bus>,
}

impl SystemdDriver {
    /// The driver for a new container: `init_cgroup` is /proc/1/cgroup, `root` the state
    /// root (for the scope's Description).
    pub fn for_layout(
        h: &Hierarchies,
        init_cgroup: &str,
        cgroups_path: Option<&Path>,
        id: &str,
        root: &Path,
    ) -> Result<Self> {
        let UnitPath { slice, unit } = unit_path(cgroups_path, id)?;
        let slice_path = expand_slice(&slice)?;
        let slice_path = if slice_path == "/" { "" } else { &slice_path };
        let init = layout::parse_proc_cgroup(init_cgroup)?;
        let unified =
            h.v2.as_ref()
                .map(|(m, _)| scope_dir(m, init_path(&init, &[]), slice_path, &unit));
        let fs_record = match h.mode {
            Mode::None => bail!("--systemd-cgroup: no cgroup filesystem is mounted"),
            Mode::Unified => CgroupRecord {
                driver: DriverKind::CgroupfsV2,
                unified,
                ..Default::default()
            },
            Mode::Legacy | Mode::Hybrid => CgroupRecord {
                driver: DriverKind::CgroupfsV1,
                v1: h
                    .v1
                    .iter()
                    .map(|hier| super::V1Dir {
                        controllers: hier.controllers.clone(),
                        path: scope_dir(
                            &hier.mount,
                            init_path(&init, &hier.controllers),
                            slice_path,
                            &unit,
                        ),
                    })
                    .collect(),
                unified,
                ..Default::default()
            },
        };
        Ok(SystemdDriver {
            unit,
            slice,
            description: description(id, &std::path::absolute(root).unwrap_or(root.into())),
            fs: super::open_driver(&fs_record)?,
            bus: OnceLock::new(),
        })
    }

    pub fn from_record(r: &CgroupRecord) -> Result<Self> {
        let Some(unit) = r.unit.clone() else {
            bail!("state.json: cgroups driver systemd without its unit");
        };
        let fs_record = CgroupRecord {
            driver: if r.v1.is_empty() {
                DriverKind::CgroupfsV2
            } else {
                DriverKind::CgroupfsV1
            },
            unit: None,
            ..r.clone()
        };
        Ok(SystemdDriver {
            unit,
            slice: String::new(),
            description: String::new(),
            fs: super::open_driver(&fs_record)?,
            bus: OnceLock::new(),
        })
    }

    fn v2(&self) -> bool {
        self.fs.record().driver == DriverKind::CgroupfsV2
    }

    /// The bus connection and systemd's version, made on first use.
    fn bus(&self) -> Result<(&Bus, u32)> {
        if let Some(b) = self.bus.get() {
            return Ok((b, b.version()));
        }
        let bus = Bus::connect().context("--systemd-cgroup")?;
        let bus = self.bus.get_or_init(|| bus);
        Ok((bus, bus.version()))
    }

    /// systemd's properties for `r`, then the files (the same values, and the rest).
    fn apply_both(&self, r: &LinuxResources, rules: Option<&[Rule]>) -> Result<()> {
        let (bus, version) = self.bus()?;
        let p = props::resources(r, rules, self.v2(), version)?;
        if !p.is_empty() {
            bus.set_properties(&self.unit, &p)
                .with_context(|| format!("set properties of systemd unit {}", self.unit))?;
        }
        self.fs.apply(r, rules)
    }
}

impl CgroupDriver for SystemdDriver {
    fn record(&self) -> CgroupRecord {
        CgroupRecord {
            driver: DriverKind::Systemd,
            unit: Some(self.unit.clone()),
            ..self.fs.record()
        }
    }

    fn paths(&self) -> Vec<&Path> {
        self.fs.paths()
    }

    fn cgroup2_dir(&self) -> Option<&Path> {
        self.fs.cgroup2_dir()
    }

    fn preflight(&self) -> Result<()> {
        // A live container with the same scope has processes in its directories.
        self.fs.preflight()
    }

    /// Nothing to make before the first process: systemd creates the scope with it.
    fn create(&self) -> Result<()> {
        self.preflight()
    }

    /// The limits go with the scope, in `start`.
    fn set_for_create(&self, _resources: &LinuxResources) -> Result<()> {
        Ok(())
    }

    fn start(&self, pid: i32, resources: &LinuxResources) -> Result<()> {
        let config = resources.devices().as_deref().unwrap_or(&[]);
        let rules = devices::effective_rules(config, &[])?;
        let (bus, version) = self.bus()?;
        let v2 = self.v2();
        let mut p = props::scope(&self.slice, &self.description, pid as u32, v2);
        p.extend(props::resources(resources, Some(&rules), v2, version)?);
        bus.start_transient(&self.unit, &p)
            .with_context(|| format!("start systemd unit {}", self.unit))?;
        // The pid must now be in the scope's cgroup2 directory: if not, the directories
        // lrun worked out are not where systemd put the scope.
        if let Some(u) = self.fs.cgroup2_dir()
            && !fs::procs(u, false).is_ok_and(|p| p.contains(&pid))
        {
            bail!(
                "systemd started {} but process {pid} is not in {}",
                self.unit,
                u.display()
            );
        }
        // The hierarchies systemd leaves alone (v1 cpuset, freezer, ...) and named ones.
        for dir in self.fs.paths() {
            if !dir.exists() {
                fs::mkdir_all(dir)?;
                if self
                    .fs
                    .record()
                    .v1
                    .iter()
                    .any(|d| d.path == dir && d.controllers.iter().any(|c| c == "cpuset"))
                {
                    super::v1::fill_cpuset(dir)?;
                }
            }
        }
        self.fs.add_pid(pid)?;
        self.fs.apply(resources, Some(&rules))
    }

    fn apply(&self, r: &LinuxResources, rules: Option<&[Rule]>) -> Result<()> {
        self.apply_both(r, rules)
    }

    fn add_pid(&self, pid: i32) -> Result<()> {
        self.fs.add_pid(pid)
    }

    fn sub_cgroup(&self, sub: &SubCgroups) -> Result<CgroupRecord> {
        self.fs.sub_cgroup(sub)
    }

    fn freeze(&self) -> Result<()> {
        self.fs.freeze()
    }

    fn thaw(&self) -> Result<()> {
        self.fs.thaw()
    }

    fn is_frozen(&self) -> Result<bool> {
        self.fs.is_frozen()
    }

    fn pids(&self) -> Result<Vec<i32>> {
        self.fs.pids()
    }

    fn stats(&self) -> Result<Stats> {
        self.fs.stats()
    }

    fn oom_watcher(&self) -> Result<Option<OomWatcher>> {
        self.fs.oom_watcher()
    }

    /// Kill what is left, stop the scope (systemd removes its directories), then remove
    /// what lrun made itself.
    fn destroy(&self) -> Result<()> {
        self.kill_all()?;
        let stopped = self
            .bus()
            .and_then(|(bus, _)| bus.stop(&self.unit))
            .with_context(|| format!("stop systemd unit {}", self.unit));
        let removed = self.fs.destroy();
        stopped.and(removed)
    }
}

/// `gc`: stop the scopes lrun made for state root `root` that no container owns any more
/// (`owned(id, unit)` says whether container `id` still claims `unit`). Returns the units
/// stopped. Nothing to do, and no error, where systemd is not running.
pub fn orphan_scopes(root: &Path, owned: impl Fn(&str, &str) -> bool) -> Result<Vec<String>> {
    // sd_booted(3).
    if !Path::new("/run/systemd/system").is_dir() {
        return Ok(Vec::new());
    }
    let root = std::path::absolute(root).unwrap_or(root.into());
    // Booted with systemd but nothing answers (say, a container that sees the host's /run):
    // nothing could be stopped, and that is no container's failure.
    let bus = match Bus::connect() {
        Ok(b) => b,
        Err(e) => {
            logging::debug(&format!("gc: no systemd scopes to look at: {e:#}"));
            return Ok(Vec::new());
        }
    };
    let mut stopped = Vec::new();
    for (unit, desc) in bus.scopes("*.scope")? {
        let Some((id, r)) = parse_description(&desc) else {
            continue;
        };
        if r != root || owned(id, &unit) {
            continue;
        }
        logging::debug(&format!("stopping {unit}: container {id} is gone"));
        let cg = bus.control_group(&unit)?;
        bus.stop(&unit)
            .with_context(|| format!("stop orphaned systemd unit {unit}"))?;
        if let Some(cg) = cg {
            remove_leftovers(&cg, &unit)?;
        }
        stopped.push(unit);
    }
    Ok(stopped)
}

/// The directories a scope's container had in the hierarchies systemd leaves alone (v1
/// cpuset, freezer, ...): at the scope's path `cg` in every mounted hierarchy. Without the
/// container's record these are found by that path; only directories named after the unit.
fn remove_leftovers(cg: &str, unit: &str) -> Result<()> {
    let mountinfo = crate::mountinfo::read_self()?;
    for m in crate::mountinfo::cgroup_mounts(&mountinfo) {
        let rel = match m.root.as_str() {
            "/" => Some(cg),
            root => cg.strip_prefix(root).filter(|r| r.starts_with('/')),
        };
        let Some(rel) = rel else { continue };
        let dir = m.mount_point.join(rel.trim_start_matches('/'));
        if dir.file_name().is_some_and(|n| n == unit) && dir.exists() {
            fs::remove_tree(&dir)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(p: Option<&str>, id: &str) -> Result<UnitPath> {
        unit_path(p.map(Path::new), id)
    }

    #[test]
    fn cgroups_path_names_slice_and_scope_as_runc_reads_it() {
        let u = up(Some("kubepods-besteffort.slice:cri-containerd:abc"), "x").unwrap();
        assert_eq!(u.slice, "kubepods-besteffort.slice");
        assert_eq!(u.unit, "cri-containerd-abc.scope");
        let u = up(None, "c1").unwrap();
        assert_eq!(
            (u.slice.as_str(), u.unit.as_str()),
            ("system.slice", "lrun-c1.scope")
        );
        let u = up(Some(""), "c1").unwrap();
        assert_eq!(u.unit, "lrun-c1.scope");
        // An empty slice is the default one; an empty prefix gives runc's "-name.scope".
        let u = up(Some(":p:n"), "x").unwrap();
        assert_eq!(
            (u.slice.as_str(), u.unit.as_str()),
            ("system.slice", "p-n.scope")
        );
        assert_eq!(up(Some("machine.slice::n"), "x").unwrap().unit, "-n.scope");
    }

    #[test]
    fn bad_cgroups_paths_are_one_clear_line() {
        let err = |p: &str| format!("{:#}", up(Some(p), "x").unwrap_err());
        assert_eq!(
            err("/k8s.io/abc"),
            "expected cgroupsPath to be of format \"slice:prefix:name\" for systemd cgroups, got \"/k8s.io/abc\" instead"
        );
        assert!(err("a:b:c:d").contains("slice:prefix:name"));
        assert!(err("system.slice:p:").contains("name (after the second ':') is empty"));
        assert!(err("system.slice:p:x.slice").contains("only makes scopes"));
        assert!(
            err("system:p:n").contains("invalid slice \"system\""),
            "{}",
            err("system:p:n")
        );
        assert!(err("a--b.slice:p:n").contains("invalid slice"));
        assert!(err("system.slice:p q:n").contains("' ' is not allowed"));
        assert!(err("system.slice:p:a/b").contains("'/' is not allowed"));
        for e in ["/k8s.io/abc", "system:p:n", "system.slice:p:"] {
            assert!(!err(e).contains('\n'), "{e}");
        }
    }

    #[test]
    fn slices_nest_by_their_dashes() {
        assert_eq!(expand_slice("system.slice").unwrap(), "/system.slice");
        assert_eq!(
            expand_slice("kubepods-besteffort-pod1.slice").unwrap(),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice"
        );
        assert_eq!(expand_slice("-.slice").unwrap(), "/");
        for bad in [
            ".slice",
            "a",
            "a-.slice",
            "-a.slice",
            "a/b.slice",
            "a--b.slice",
        ] {
            assert!(expand_slice(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn descriptions_mark_lrun_scopes() {
        let d = description("c1", Path::new("/run/lrun"));
        assert_eq!(d, "lrun container c1 root=/run/lrun");
        assert_eq!(parse_description(&d), Some(("c1", Path::new("/run/lrun"))));
        assert_eq!(parse_description("libcontainer container c1"), None);
    }

    #[test]
    fn scope_directories_follow_the_slice_on_each_layout() {
        let v2 = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let h = layout::detect(v2, "0::/user.slice/x.scope\n").unwrap();
        let d = SystemdDriver::for_layout(
            &h,
            "0::/init.scope\n",
            Some(Path::new("a-b.slice:cri:c1")),
            "ignored",
            Path::new("/run/lrun"),
        )
        .unwrap();
        let r = d.record();
        assert_eq!(r.driver, DriverKind::Systemd);
        assert_eq!(r.unit.as_deref(), Some("cri-c1.scope"));
        assert_eq!(
            r.unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/a.slice/a-b.slice/cri-c1.scope"))
        );
        // What state.json keeps opens the same driver again.
        let back: CgroupRecord = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(super::super::open_driver(&back).unwrap().record(), r);

        let hybrid = "\
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer
40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
        let own = "9:name=systemd:/user.slice\n4:memory:/user.slice\n3:freezer:/\n0::/user.slice\n";
        let init =
            "9:name=systemd:/init.scope\n4:memory:/init.scope\n3:freezer:/\n0::/init.scope\n";
        let h = layout::detect(hybrid, own).unwrap();
        let d = SystemdDriver::for_layout(&h, init, None, "c1", Path::new("/r")).unwrap();
        let r = d.record();
        assert_eq!(
            r.v1_dir("memory"),
            Some(Path::new(
                "/sys/fs/cgroup/memory/system.slice/lrun-c1.scope"
            ))
        );
        assert_eq!(
            r.v1_dir("freezer"),
            Some(Path::new(
                "/sys/fs/cgroup/freezer/system.slice/lrun-c1.scope"
            ))
        );
        assert_eq!(
            r.unified.as_deref(),
            Some(Path::new(
                "/sys/fs/cgroup/unified/system.slice/lrun-c1.scope"
            ))
        );
        assert_eq!(d.description, "lrun container c1 root=/r");
        let back: CgroupRecord = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(super::super::open_driver(&back).unwrap().record(), r);

        // The root slice puts the scope at the top.
        let h = layout::detect(v2, "0::/\n").unwrap();
        let d = SystemdDriver::for_layout(
            &h,
            "0::/\n",
            Some(Path::new("-.slice:p:n")),
            "x",
            Path::new("/r"),
        )
        .unwrap();
        assert_eq!(
            d.record().unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/p-n.scope"))
        );
    }
}
