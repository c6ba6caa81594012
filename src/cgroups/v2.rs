//! The cgroupfs driver for cgroup v2 (the unified hierarchy): resource limits, freezing and
//! statistics. The freeze/thaw and `unified` helpers also serve the hybrid layout's cgroup2
//! directory (v1.rs).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources};

use super::devices::Rule;
use super::fs::{self, exists, read_opt, read_u64_opt, write};
use super::oom::OomWatcher;
use super::stats::{self, Stats};
use super::{CgroupDriver, CgroupRecord, DriverKind, SubCgroups, bpf, layout, rdma_lines, sub_dir};

use crate::logging;

#[derive(Debug)]
pub struct V2Driver {
    /// The container's cgroup: where its processes and limits live.
    dir: PathBuf,
    /// The cgroup2 mount point, to enable controllers on the way down.
    mount: Option<PathBuf>,
}

impl V2Driver {
    pub fn for_layout(
        h: &layout::Hierarchies,
        cgroups_path: Option<&Path>,
        id: &str,
    ) -> Result<Self> {
        let Some((mount, own)) = &h.v2 else {
            bail!("no cgroup2 mount in a unified cgroup layout");
        };
        Ok(V2Driver {
            dir: layout::container_dir(mount, own, cgroups_path, id, true)?,
            mount: Some(mount.mount_point.clone()),
        })
    }

    pub fn from_record(r: &CgroupRecord) -> Result<Self> {
        let Some(dir) = r.unified.clone() else {
            bail!("state.json: cgroups driver cgroupfs-v2 without its cgroup2 directory");
        };
        Ok(V2Driver {
            dir,
            mount: r.unified_mount.clone(),
        })
    }
}

impl CgroupDriver for V2Driver {
    fn record(&self) -> CgroupRecord {
        CgroupRecord {
            driver: DriverKind::CgroupfsV2,
            v1: Vec::new(),
            unified: Some(self.dir.clone()),
            unified_mount: self.mount.clone(),
            unit: None,
        }
    }

    fn paths(&self) -> Vec<&Path> {
        vec![&self.dir]
    }

    fn cgroup2_dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }

    fn preflight(&self) -> Result<()> {
        // destroy kills everything inside: never adopt a cgroup that already holds processes
        // (a cgroupsPath naming someone else's cgroup, or our own).
        super::refuse_populated(&self.dir)?;
        refuse_frozen(&self.dir)
    }

    fn create(&self) -> Result<()> {
        self.preflight()?;
        if let Some(parent) = self.dir.parent() {
            fs::mkdir_all(parent)?;
        }
        if let Some(mount) = &self.mount {
            enable_controllers(mount, &self.dir)?;
        }
        fs::mkdir_all(&self.dir)?;
        Ok(())
    }

    fn apply(&self, r: &LinuxResources, rules: Option<&[Rule]>) -> Result<()> {
        set(&self.dir, r, rules)
    }

    fn add_pid(&self, pid: i32) -> Result<()> {
        fs::write(&self.dir, "cgroup.procs", &pid.to_string()).map_err(|e| {
            match self.dir.parent().filter(|p| has_processes(p)) {
                // The kernel's EOPNOTSUPP/EBUSY says nothing of the cause, common under a
                // systemd service whose own cgroup holds lrun.
                Some(p) => e.context(format!(
                    "{} has processes of its own, so by cgroup v2's no-internal-processes rule \
                     no cgroup below it can have controllers: move them into a leaf cgroup \
                     (runtime-spec/systemd.md) or choose another cgroupsPath",
                    p.display()
                )),
                None => e,
            }
        })
    }

    fn birth_cgroup(&self) -> Option<&Path> {
        Some(&self.dir)
    }

    /// One hierarchy: only a path without a controller.
    fn sub_cgroup(&self, sub: &SubCgroups) -> Result<CgroupRecord> {
        if let Some(c) = sub.keys().find(|c| !c.is_empty()) {
            bail!("unknown controller {c} in --cgroup: cgroup v2 takes a path without one");
        }
        let mut r = self.record();
        if let Some(s) = sub.get("") {
            r.unified = Some(sub_dir(&self.dir, s)?);
        }
        Ok(r)
    }

    fn freeze(&self) -> Result<()> {
        freeze(&self.dir)
    }

    fn thaw(&self) -> Result<()> {
        thaw(&self.dir)
    }

    fn is_frozen(&self) -> Result<bool> {
        is_frozen(&self.dir)
    }

    fn pids(&self) -> Result<Vec<i32>> {
        fs::procs(&self.dir, true)
    }

    fn stats(&self) -> Result<Stats> {
        stats(&self.dir)
    }

    fn oom_watcher(&self) -> Result<Option<OomWatcher>> {
        let last = self.oom_kills().unwrap_or(0);
        OomWatcher::v2(&self.dir, last).map(Some)
    }
}

/// Enable every available controller on the way from the mount point down to `leaf`'s
/// parent, so that `leaf` gets them. Only writes where something is missing.
pub fn enable_controllers(mount_point: &Path, leaf: &Path) -> Result<()> {
    let Ok(rel) = leaf.strip_prefix(mount_point) else {
        bail!("{} is not below {}", leaf.display(), mount_point.display());
    };
    let mut dir = mount_point.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for (i, c) in comps.iter().enumerate() {
        let available = fs::read(&dir, "cgroup.controllers")?;
        let enabled = fs::read(&dir, "cgroup.subtree_control")?;
        let enabled: Vec<&str> = enabled.split_whitespace().collect();
        let missing: Vec<String> = available
            .split_whitespace()
            .filter(|c| !enabled.contains(c))
            .map(|c| format!("+{c}"))
            .collect();
        if !missing.is_empty() && write(&dir, "cgroup.subtree_control", &missing.join(" ")).is_err()
        {
            // One refusal (cpu with realtime tasks about, say) fails the whole write: enable
            // what can be, one by one. A limit that then lacks its file fails with its name.
            for c in &missing {
                if let Err(e) = write(&dir, "cgroup.subtree_control", c) {
                    logging::debug(&format!("cannot enable {c}: {e:#}"));
                }
            }
        }
        if i + 1 == comps.len() {
            break;
        }
        dir.push(c);
    }
    Ok(())
}

/// Whether the cgroup `dir` directly holds a process (not the root: it is exempt from the
/// no-internal-processes rule).
fn has_processes(dir: &Path) -> bool {
    exists(dir, "cgroup.type")
        && read_opt(dir, "cgroup.procs").is_ok_and(|t| t.is_some_and(|t| !t.trim().is_empty()))
}

/// runc's mapping of v1 cpu.shares [2, 262144] onto cpu.weight [1, 10000].
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

/// runc's mapping of blkio weight [10, 1000] onto io.weight [1, 10000].
pub fn blkio_to_io_weight(w: u16) -> u64 {
    if w == 0 {
        return 0;
    }
    let w = u64::from(w.clamp(10, 1000));
    1 + (w - 10) * 9999 / 990
}

/// OCI's memory.swap is memory + swap; v2's memory.swap.max is swap alone.
pub fn swap_max(swap: i64, limit: Option<i64>) -> Result<String> {
    if swap == -1 {
        return Ok("max".into());
    }
    match limit {
        None | Some(0) => bail!("linux.resources.memory.swap needs memory.limit on cgroup v2"),
        Some(-1) => Ok("max".into()),
        Some(l) if swap < l => {
            bail!("linux.resources.memory.swap {swap} is below memory.limit {l}")
        }
        Some(l) => Ok((swap - l).to_string()),
    }
}

fn max_or(v: i64) -> String {
    if v < 0 { "max".into() } else { v.to_string() }
}

fn set(dir: &Path, r: &LinuxResources, devices: Option<&[Rule]>) -> Result<()> {
    if let Some(mem) = r.memory() {
        memory(dir, mem)?;
    }
    if let Some(cpu) = r.cpu() {
        cpu_limits(dir, cpu)?;
    }
    if let Some(p) = r.pids()
        && p.limit() != 0
    {
        write(dir, "pids.max", &max_or(p.limit()))?;
    }
    if let Some(b) = r.block_io() {
        io(dir, b)?;
    }
    for l in r.hugepage_limits().iter().flatten() {
        fs::write_hugetlb(dir, l.page_size(), l.limit(), "max")?;
    }
    if let Some(n) = r.network()
        && (n.class_id().is_some() || n.priorities().as_ref().is_some_and(|p| !p.is_empty()))
    {
        bail!("linux.resources.network (net_cls/net_prio) does not exist on cgroup v2");
    }
    if let Some(rdma) = r.rdma() {
        for line in rdma_lines(rdma) {
            write(dir, "rdma.max", &line)?;
        }
    }
    if let Some(u) = r.unified() {
        unified(dir, u)?;
    }
    if let Some(rules) = devices {
        bpf::apply(dir, rules)?;
    }
    Ok(())
}

/// `unified` keys are file names in the container's cgroup, written as given.
pub fn unified(dir: &Path, u: &std::collections::HashMap<String, String>) -> Result<()> {
    let mut keys: Vec<_> = u.keys().collect();
    keys.sort();
    for k in keys {
        if k.is_empty() || k.contains('/') || k.starts_with('.') || !k.contains('.') {
            bail!("linux.resources.unified: invalid key {k:?}");
        }
        if !exists(dir, k) {
            bail!(
                "linux.resources.unified: {k:?} does not exist in {} (controller not enabled?)",
                dir.display()
            );
        }
        write(dir, k, &u[k]).with_context(|| format!("linux.resources.unified key {k:?}"))?;
    }
    Ok(())
}

fn memory(dir: &Path, mem: &LinuxMemory) -> Result<()> {
    let limit = mem.limit().filter(|&l| l != 0);
    if mem.check_before_update() == Some(true)
        && let Some(l) = limit
        && l > 0
    {
        let usage = fs::read_u64(dir, "memory.current")?;
        if (l as u64) < usage {
            bail!("linux.resources.memory.limit {l} is below the current usage {usage}");
        }
    }
    if let Some(s) = mem.swap().filter(|&s| s != 0) {
        // On update the limit may be absent: the swap split needs the limit in force.
        let effective = match limit {
            Some(l) => Some(l),
            None => match fs::read(dir, "memory.max")?.trim() {
                "max" => Some(-1),
                v => Some(
                    v.parse()
                        .with_context(|| format!("parse memory.max {v:?}"))?,
                ),
            },
        };
        let value = swap_max(s, effective)?;
        if exists(dir, "memory.swap.max") {
            write(dir, "memory.swap.max", &value)?;
        } else {
            logging::warn(
                "swap accounting is off in this kernel: linux.resources.memory.swap ignored",
            );
        }
    }
    if let Some(l) = limit {
        write(dir, "memory.max", &max_or(l))?;
    }
    if let Some(r) = mem.reservation().filter(|&r| r != 0) {
        write(dir, "memory.low", &max_or(r))?;
    }
    if mem.disable_oom_killer() == Some(true) {
        logging::warn(
            "linux.resources.memory.disableOOMKiller has no cgroup v2 equivalent; ignored",
        );
    }
    if mem.swappiness().is_some() {
        logging::warn("linux.resources.memory.swappiness has no cgroup v2 equivalent; ignored");
    }
    Ok(())
}

fn cpu_limits(dir: &Path, cpu: &LinuxCpu) -> Result<()> {
    if let Some(s) = cpu.shares().filter(|&s| s != 0) {
        write(dir, "cpu.weight", &shares_to_weight(s).to_string())?;
    }
    let quota = cpu.quota().filter(|&q| q != 0);
    let period = cpu.period().filter(|&p| p != 0);
    if quota.is_some() || period.is_some() {
        let q = match quota {
            Some(q) if q > 0 => q.to_string(),
            Some(_) => "max".to_string(),
            // Only the period changes: keep the quota in force.
            None => fs::read(dir, "cpu.max")?
                .split_whitespace()
                .next()
                .unwrap_or("max")
                .to_string(),
        };
        let value = match period {
            Some(p) => format!("{q} {p}"),
            None => q,
        };
        write(dir, "cpu.max", &value)?;
    }
    if let Some(b) = cpu.burst() {
        write(dir, "cpu.max.burst", &b.to_string())?;
    }
    if let Some(i) = cpu.idle() {
        write(dir, "cpu.idle", &i.to_string())?;
    }
    if cpu.realtime_period().is_some_and(|p| p != 0)
        || cpu.realtime_runtime().is_some_and(|r| r != 0)
    {
        bail!("linux.resources.cpu.realtime* is not supported on cgroup v2");
    }
    if let Some(c) = cpu.cpus().as_deref().filter(|s| !s.is_empty()) {
        write(dir, "cpuset.cpus", c)?;
    }
    if let Some(m) = cpu.mems().as_deref().filter(|s| !s.is_empty()) {
        write(dir, "cpuset.mems", m)?;
    }
    Ok(())
}

fn io(dir: &Path, b: &LinuxBlockIo) -> Result<()> {
    let bfq = exists(dir, "io.bfq.weight");
    if let Some(w) = b.weight().filter(|&w| w != 0) {
        if bfq {
            write(dir, "io.bfq.weight", &w.to_string())?;
        } else {
            write(
                dir,
                "io.weight",
                &format!("default {}", blkio_to_io_weight(w)),
            )?;
        }
    }
    if b.leaf_weight().is_some_and(|w| w != 0) {
        logging::warn("linux.resources.blockIO.leafWeight has no cgroup v2 equivalent; ignored");
    }
    for d in b.weight_device().iter().flatten() {
        if let Some(w) = d.weight() {
            let (file, v) = if bfq {
                ("io.bfq.weight", u64::from(w))
            } else {
                ("io.weight", blkio_to_io_weight(w))
            };
            write(dir, file, &format!("{}:{} {v}", d.major(), d.minor()))?;
        }
    }
    let throttles = [
        (b.throttle_read_bps_device(), "rbps"),
        (b.throttle_write_bps_device(), "wbps"),
        (b.throttle_read_iops_device(), "riops"),
        (b.throttle_write_iops_device(), "wiops"),
    ];
    for (list, key) in throttles {
        for d in list.iter().flatten() {
            let rate = if d.rate() == 0 {
                "max".to_string()
            } else {
                d.rate().to_string()
            };
            write(
                dir,
                "io.max",
                &format!("{}:{} {key}={rate}", d.major(), d.minor()),
            )?;
        }
    }
    Ok(())
}

pub fn freeze(dir: &Path) -> Result<()> {
    write(dir, "cgroup.freeze", "1")?;
    for i in 0..2000u32 {
        if events(dir)?.get("frozen") == Some(&1) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_micros(if i < 10 { 100 } else { 1000 }));
    }
    let _ = write(dir, "cgroup.freeze", "0");
    bail!("{}: processes did not freeze within 2 s", dir.display())
}

pub fn thaw(dir: &Path) -> Result<()> {
    write(dir, "cgroup.freeze", "0")
}

/// Refuse a cgroup that is frozen (cgroup.freeze 1) or, if it does not exist yet, whose
/// nearest existing ancestor is (cgroup.events: frozen 1 counts inherited freezing).
pub fn refuse_frozen(dir: &Path) -> Result<()> {
    let Some(d) = super::nearest_existing(dir) else {
        return Ok(());
    };
    let frozen = is_frozen(d)?
        || read_opt(d, "cgroup.events")?
            .is_some_and(|t| fs::parse_flat_keyed(&t).get("frozen") == Some(&1));
    if frozen {
        bail!("container's cgroup unexpectedly frozen: {}", d.display());
    }
    Ok(())
}

pub fn is_frozen(dir: &Path) -> Result<bool> {
    Ok(read_opt(dir, "cgroup.freeze")?.is_some_and(|s| s.trim() == "1"))
}

fn events(dir: &Path) -> Result<std::collections::BTreeMap<String, u64>> {
    Ok(fs::parse_flat_keyed(&fs::read(dir, "cgroup.events")?))
}

fn stats(dir: &Path) -> Result<Stats> {
    let mut s = Stats::default();
    if let Some(t) = read_opt(dir, "cpu.stat")? {
        let kv = fs::parse_flat_keyed(&t);
        let us = |k: &str| kv.get(k).copied().unwrap_or(0) * 1000;
        s.cpu.usage.total = us("usage_usec");
        s.cpu.usage.user = us("user_usec");
        s.cpu.usage.kernel = us("system_usec");
        s.cpu.throttling.periods = kv.get("nr_periods").copied().unwrap_or(0);
        s.cpu.throttling.throttled_periods = kv.get("nr_throttled").copied().unwrap_or(0);
        s.cpu.throttling.throttled_time = us("throttled_usec");
    }
    if exists(dir, "memory.current") {
        s.memory.usage.usage = read_u64_opt(dir, "memory.current")?.unwrap_or(0);
        s.memory.usage.limit = read_u64_opt(dir, "memory.max")?.unwrap_or(0);
        s.memory.usage.max = read_u64_opt(dir, "memory.peak")?.unwrap_or(0);
        s.memory.swap.usage = read_u64_opt(dir, "memory.swap.current")?.unwrap_or(0);
        s.memory.swap.limit = read_u64_opt(dir, "memory.swap.max")?.unwrap_or(0);
        if let Some(t) = read_opt(dir, "memory.stat")? {
            s.memory.raw = fs::parse_flat_keyed(&t);
            s.memory.cache = s.memory.raw.get("file").copied().unwrap_or(0);
        }
        if let Some(t) = read_opt(dir, "memory.events")? {
            let kv = fs::parse_flat_keyed(&t);
            // "max": times usage hit the limit, the closest to v1's failcnt.
            s.memory.usage.failcnt = kv.get("max").copied().unwrap_or(0);
            s.memory
                .raw
                .insert("oom_kill".into(), kv.get("oom_kill").copied().unwrap_or(0));
        }
    }
    if exists(dir, "pids.current") {
        s.pids.current = read_u64_opt(dir, "pids.current")?.unwrap_or(0);
        s.pids.limit = match read_u64_opt(dir, "pids.max")? {
            Some(u64::MAX) | None => 0,
            Some(v) => v,
        };
    }
    if let Some(t) = read_opt(dir, "io.stat")? {
        let (bytes, ios) = stats::parse_io_stat(&t);
        s.blkio.io_service_bytes_recursive = bytes;
        s.blkio.io_serviced_recursive = ios;
    }
    for size in fs::hugetlb_sizes(dir)? {
        let f = |n: &str| read_u64_opt(dir, &format!("hugetlb.{size}.{n}"));
        let failcnt = match read_opt(dir, &format!("hugetlb.{size}.events"))? {
            Some(t) => fs::parse_flat_keyed(&t).get("max").copied().unwrap_or(0),
            None => 0,
        };
        s.hugetlb.insert(
            size.clone(),
            stats::Hugetlb {
                usage: f("current")?.unwrap_or(0),
                max: 0,
                failcnt,
            },
        );
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_match_runc() {
        assert_eq!(shares_to_weight(0), 0);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(1000), 10_000);
        assert_eq!(blkio_to_io_weight(500), 4950);
    }

    #[test]
    fn swap_is_split_from_memory() {
        assert_eq!(swap_max(-1, Some(100)).unwrap(), "max");
        assert_eq!(swap_max(300, Some(100)).unwrap(), "200");
        assert_eq!(swap_max(100, Some(100)).unwrap(), "0");
        assert_eq!(swap_max(300, Some(-1)).unwrap(), "max");
        assert!(swap_max(50, Some(100)).is_err());
        assert!(swap_max(50, None).is_err());
    }

    /// A made-up v2 tree in a temp dir: the writes land in the files `set` should pick.
    #[test]
    fn resources_land_in_v2_files() {
        use oci_spec::runtime::*;
        let tmp = fs::TempDir::new("v2");
        let dir = tmp.0.clone();
        for f in [
            "memory.max",
            "memory.low",
            "memory.swap.max",
            "memory.current",
            "cpu.weight",
            "cpu.max",
            "pids.max",
            "io.weight",
            "io.max",
            "memory.high",
            "hugetlb.2MB.max",
            "hugetlb.2MB.rsvd.max",
        ] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        std::fs::write(dir.join("memory.current"), "1000\n").unwrap();
        let r = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(1 << 20)
                    .swap(2 << 20)
                    .reservation(1 << 19)
                    .check_before_update(true)
                    .build()
                    .unwrap(),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(1024u64)
                    .quota(50_000)
                    .period(100_000u64)
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(-1).build().unwrap())
            .block_io(
                LinuxBlockIoBuilder::default()
                    .weight(500u16)
                    .throttle_read_bps_device(vec![
                        LinuxThrottleDeviceBuilder::default()
                            .major(8)
                            .minor(0)
                            .rate(1000u64)
                            .build()
                            .unwrap(),
                    ])
                    .build()
                    .unwrap(),
            )
            .hugepage_limits(vec![
                LinuxHugepageLimitBuilder::default()
                    .page_size("2MB")
                    .limit(4 << 20)
                    .build()
                    .unwrap(),
            ])
            .unified(
                [("memory.high".to_string(), "5000".to_string())]
                    .into_iter()
                    .collect::<std::collections::HashMap<_, _>>(),
            )
            .build()
            .unwrap();
        set(&dir, &r, None).unwrap();
        let rd = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(rd("memory.max"), "1048576");
        assert_eq!(rd("memory.swap.max"), "1048576");
        assert_eq!(rd("memory.low"), "524288");
        assert_eq!(rd("cpu.weight"), "39");
        assert_eq!(rd("cpu.max"), "50000 100000");
        assert_eq!(rd("pids.max"), "max");
        assert_eq!(rd("io.weight"), "default 4950");
        assert_eq!(rd("io.max"), "8:0 rbps=1000");
        assert_eq!(rd("memory.high"), "5000");
        assert_eq!(rd("hugetlb.2MB.max"), "4194304");
        assert_eq!(rd("hugetlb.2MB.rsvd.max"), "4194304");
        let bad = LinuxResourcesBuilder::default()
            .unified(
                [("../x".to_string(), "1".to_string())]
                    .into_iter()
                    .collect::<std::collections::HashMap<_, _>>(),
            )
            .build()
            .unwrap();
        assert!(set(&dir, &bad, None).is_err());
        // A limit below the current usage is refused when asked to check.
        std::fs::write(dir.join("memory.current"), "4096\n").unwrap();
        let low = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(100)
                    .check_before_update(true)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        assert!(set(&dir, &low, None).is_err());
        assert_eq!(rd("memory.max"), "1048576");
    }

    #[test]
    fn controllers_are_enabled_down_to_the_parent_only() {
        let tmp = fs::TempDir::new("v2e");
        let root = tmp.0.clone();
        std::fs::create_dir_all(root.join("a")).unwrap();
        for d in [root.clone(), root.join("a")] {
            std::fs::write(d.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
            std::fs::write(d.join("cgroup.subtree_control"), "memory\n").unwrap();
        }
        enable_controllers(&root, &root.join("a/c1")).unwrap();
        let rd = |p: &Path| std::fs::read_to_string(p.join("cgroup.subtree_control")).unwrap();
        assert_eq!(rd(&root), "+cpu +pids");
        assert_eq!(rd(&root.join("a")), "+cpu +pids");
    }
}
