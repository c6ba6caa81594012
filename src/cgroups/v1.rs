//! The cgroupfs driver for v1 hierarchies (legacy and hybrid layouts): resource limits,
//! freezing and statistics. In a hybrid layout the container also gets a cgroup2 directory,
//! for process tracking only (best effort).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources};

use super::devices::Rule;
use super::fs::{self, exists, read_opt, read_u64, read_u64_opt, write};
use super::oom::OomWatcher;
use super::stats::{self, Stats};
use super::{
    CgroupDriver, CgroupRecord, DriverKind, SubCgroups, V1Dir, layout, rdma_lines, sub_dir, v2,
};
use crate::logging;

#[derive(Debug)]
pub struct V1Driver {
    /// One directory per mounted v1 hierarchy.
    dirs: Vec<V1Dir>,
    /// The container's cgroup2 directory in a hybrid layout (None on pure v1).
    unified: Option<PathBuf>,
}

/// Named hierarchies (name=systemd) carry no limits: failing to join one is not fatal.
fn optional(d: &V1Dir) -> bool {
    d.controllers.iter().all(|c| c.starts_with("name="))
}

impl V1Driver {
    pub fn for_layout(
        h: &layout::Hierarchies,
        cgroups_path: Option<&Path>,
        id: &str,
    ) -> Result<Self> {
        let mut dirs = Vec::new();
        for hier in &h.v1 {
            let path = layout::container_dir(&hier.mount, &hier.own_path, cgroups_path, id, false)?;
            dirs.push(V1Dir {
                controllers: hier.controllers.clone(),
                path,
            });
        }
        let unified = match &h.v2 {
            Some((mount, own)) => Some(layout::container_dir(mount, own, cgroups_path, id, false)?),
            None => None,
        };
        Ok(V1Driver { dirs, unified })
    }

    pub fn from_record(r: &CgroupRecord) -> Self {
        V1Driver {
            dirs: r.v1.clone(),
            unified: r.unified.clone(),
        }
    }

    fn v1_dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|d| d.controllers.iter().any(|c| c == controller))
            .map(|d| d.path.as_path())
    }

    /// The directory that freezes: the v1 freezer, else cgroup2's cgroup.freeze.
    fn freezer(&self) -> Option<(bool, &Path)> {
        if let Some(d) = self.v1_dir("freezer") {
            return Some((true, d));
        }
        self.unified.as_deref().map(|d| (false, d))
    }

    /// The hierarchy whose cgroup.procs lists the container's processes.
    fn tracking_dir(&self) -> Option<&Path> {
        ["pids", "freezer", "memory", "devices", "cpu"]
            .iter()
            .find_map(|c| self.v1_dir(c))
            .or_else(|| self.dirs.first().map(|d| d.path.as_path()))
            .or(self.unified.as_deref())
    }
}

impl CgroupDriver for V1Driver {
    fn record(&self) -> CgroupRecord {
        CgroupRecord {
            driver: DriverKind::CgroupfsV1,
            v1: self.dirs.clone(),
            unified: self.unified.clone(),
            unified_mount: None,
            unit: None,
        }
    }

    fn paths(&self) -> Vec<&Path> {
        let mut out: Vec<&Path> = self.dirs.iter().map(|d| d.path.as_path()).collect();
        out.extend(self.unified.as_deref());
        out
    }

    fn cgroup2_dir(&self) -> Option<&Path> {
        self.unified.as_deref()
    }

    fn preflight(&self) -> Result<()> {
        // destroy kills everything inside: never adopt a cgroup that already holds processes
        // (a cgroupsPath naming someone else's cgroup, or our own).
        for dir in self.paths() {
            super::refuse_populated(dir)?;
        }
        // A v1 freezer.state reads FROZEN below a frozen ancestor too; the hybrid cgroup2
        // directory can be frozen on its own.
        if let Some(d) = self.v1_dir("freezer").and_then(super::nearest_existing)
            && read_opt(d, "freezer.state")?
                .is_some_and(|s| matches!(s.trim(), "FROZEN" | "FREEZING"))
        {
            bail!("container's cgroup unexpectedly frozen: {}", d.display());
        }
        if let Some(u) = self.unified.as_deref() {
            v2::refuse_frozen(u)?;
        }
        Ok(())
    }

    fn create(&self) -> Result<()> {
        self.preflight()?;
        for d in &self.dirs {
            match fs::mkdir_all(&d.path) {
                Ok(_) => {}
                Err(e) if optional(d) => {
                    logging::debug(&format!("skipping cgroup {}: {e:#}", d.path.display()));
                    continue;
                }
                Err(e) => return Err(e),
            };
            if d.controllers.iter().any(|c| c == "cpuset") {
                // A new v1 cpuset starts empty and refuses tasks until filled in, and so
                // does an existing one (or parent) someone made without filling it in.
                fill_cpuset(&d.path)?;
            }
        }
        if let Some(leaf) = &self.unified
            && let Err(e) = fs::mkdir_all(leaf)
        {
            logging::debug(&format!("no cgroup2 directory in hybrid layout: {e:#}"));
        }
        Ok(())
    }

    fn apply(&self, r: &LinuxResources, rules: Option<&[Rule]>) -> Result<()> {
        set(self, r, rules)?;
        if let Some(u) = r.unified().as_ref().filter(|u| !u.is_empty()) {
            match &self.unified {
                Some(dir) if dir.exists() => v2::unified(dir, u)?,
                _ => bail!("linux.resources.unified needs cgroup v2, not available here"),
            }
        }
        Ok(())
    }

    fn add_pid(&self, pid: i32) -> Result<()> {
        let pid_s = pid.to_string();
        for d in &self.dirs {
            if let Err(e) = fs::write(&d.path, "cgroup.procs", &pid_s) {
                if optional(d) && !d.path.exists() {
                    continue;
                }
                return Err(e);
            }
        }
        if let Some(u) = &self.unified
            && let Err(e) = fs::write(u, "cgroup.procs", &pid_s)
            // In a hybrid layout the cgroup2 directory is best effort.
            && u.exists()
        {
            return Err(e);
        }
        Ok(())
    }

    /// A path for "" moves every hierarchy; one for a controller moves its hierarchy; the
    /// others, and a hybrid layout's cgroup2 directory, stay at the container's cgroup.
    fn sub_cgroup(&self, sub: &SubCgroups) -> Result<CgroupRecord> {
        if let Some(c) = sub
            .keys()
            .find(|c| !c.is_empty() && self.v1_dir(c).is_none())
        {
            bail!("unknown controller {c} in --cgroup");
        }
        let mut r = self.record();
        for d in &mut r.v1 {
            let s = sub
                .get("")
                .or_else(|| d.controllers.iter().find_map(|c| sub.get(c)));
            if let Some(s) = s {
                d.path = sub_dir(&d.path, s)?;
            }
        }
        Ok(r)
    }

    fn freeze(&self) -> Result<()> {
        match self.freezer() {
            Some((true, d)) => freeze(d),
            Some((false, d)) => v2::freeze(d),
            None => bail!("no freezer: neither the v1 freezer nor cgroup2 is mounted"),
        }
    }

    fn thaw(&self) -> Result<()> {
        match self.freezer() {
            Some((true, d)) => thaw(d),
            Some((false, d)) => v2::thaw(d),
            None => bail!("no freezer: neither the v1 freezer nor cgroup2 is mounted"),
        }
    }

    fn is_frozen(&self) -> Result<bool> {
        match self.freezer() {
            Some((true, d)) => is_frozen(d),
            Some((false, d)) => v2::is_frozen(d),
            None => Ok(false),
        }
    }

    fn pids(&self) -> Result<Vec<i32>> {
        match self.tracking_dir() {
            Some(d) => fs::procs(d, true),
            None => Ok(Vec::new()),
        }
    }

    fn stats(&self) -> Result<Stats> {
        stats(self)
    }

    fn oom_watcher(&self) -> Result<Option<OomWatcher>> {
        let Some(dir) = self.v1_dir("memory") else {
            return Ok(None);
        };
        let last = self.oom_kills().unwrap_or(0);
        OomWatcher::v1(dir, last).map(Some)
    }
}

/// Fill cpuset.cpus and cpuset.mems of `dir` and of each empty ancestor with the value of
/// the nearest ancestor that has one, top-down (runc's cpuset ensureParent). Only empty
/// directories are written: a cgroup with tasks (ours, and every ancestor of ours) never is.
pub(super) fn fill_cpuset(dir: &Path) -> Result<()> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let mut empty = Vec::new();
        let mut value = None;
        for d in dir.ancestors() {
            // No such file: above the hierarchy's root.
            let Some(v) = read_opt(d, file)? else { break };
            if v.trim().is_empty() {
                empty.push(d);
            } else {
                value = Some(v.trim().to_string());
                break;
            }
        }
        let Some(value) = value else {
            bail!("{}: no ancestor has a non-empty {file}", dir.display());
        };
        for d in empty.iter().rev() {
            write(d, file, &value)?;
        }
    }
    Ok(())
}

/// The directory of `controller`, or an error naming the config field that needed it.
fn need<'a>(m: &'a V1Driver, controller: &str, field: &str) -> Result<&'a Path> {
    m.v1_dir(controller).with_context(|| {
        format!("linux.resources.{field} needs the cgroup v1 {controller} controller, which is not mounted")
    })
}

fn set(m: &V1Driver, r: &LinuxResources, devices: Option<&[Rule]>) -> Result<()> {
    if let Some(mem) = r.memory() {
        memory(need(m, "memory", "memory")?, mem)?;
    }
    if let Some(cpu) = r.cpu() {
        cpu_limits(m, cpu)?;
    }
    if let Some(p) = r.pids()
        && p.limit() != 0
    {
        let v = if p.limit() > 0 {
            p.limit().to_string()
        } else {
            "max".to_string()
        };
        write(need(m, "pids", "pids")?, "pids.max", &v)?;
    }
    if let Some(b) = r.block_io() {
        blkio(need(m, "blkio", "blockIO")?, b)?;
    }
    if let Some(h) = r.hugepage_limits()
        && !h.is_empty()
    {
        // Hybrid layouts may give hugetlb to cgroup2 only (as on this machine): use it there
        // when the controller reached the container's cgroup2 directory.
        let (dir, suffix) = match (m.v1_dir("hugetlb"), m.unified.as_deref()) {
            (Some(d), _) => (d, "limit_in_bytes"),
            (None, Some(u)) if fs::hugetlb_sizes(u).is_ok_and(|s| !s.is_empty()) => (u, "max"),
            _ => (need(m, "hugetlb", "hugepageLimits")?, "limit_in_bytes"),
        };
        for l in h {
            fs::write_hugetlb(dir, l.page_size(), l.limit(), suffix)?;
        }
    }
    if let Some(n) = r.network() {
        if let Some(id) = n.class_id() {
            write(
                need(m, "net_cls", "network.classID")?,
                "net_cls.classid",
                &id.to_string(),
            )?;
        }
        if let Some(prios) = n.priorities() {
            let dir = need(m, "net_prio", "network.priorities")?;
            for p in prios {
                write(
                    dir,
                    "net_prio.ifpriomap",
                    &format!("{} {}", p.name(), p.priority()),
                )?;
            }
        }
    }
    if let Some(rdma) = r.rdma() {
        let dir = need(m, "rdma", "rdma")?;
        for line in rdma_lines(rdma) {
            write(dir, "rdma.max", &line)?;
        }
    }
    if let Some(rules) = devices {
        match m.v1_dir("devices") {
            Some(dir) => {
                for rule in rules {
                    let file = if rule.allow {
                        "devices.allow"
                    } else {
                        "devices.deny"
                    };
                    write(dir, file, &rule.v1_line())?;
                }
            }
            // A hybrid layout without the v1 devices controller: cgroup2's BPF hook still
            // applies to the container's cgroup2 directory.
            None => match m.unified.as_deref() {
                Some(u) if u.exists() => super::bpf::apply(u, rules)?,
                _ => logging::warn(
                    "the devices cgroup is not mounted: device access is not restricted",
                ),
            },
        }
    }
    Ok(())
}

fn memory(dir: &Path, mem: &LinuxMemory) -> Result<()> {
    let limit = mem.limit().filter(|&l| l != 0);
    let mut swap = mem.swap().filter(|&s| s != 0);
    // An unlimited memory limit without a swap limit lifts the swap limit too (runc's
    // setMemoryAndSwap): memory.limit above memsw.limit is EINVAL.
    if limit == Some(-1) && swap.is_none() && exists(dir, "memory.memsw.limit_in_bytes") {
        swap = Some(-1);
    }
    if mem.check_before_update() == Some(true)
        && let Some(l) = limit
        && l > 0
    {
        let usage = read_u64(dir, "memory.usage_in_bytes")?;
        if (l as u64) < usage {
            bail!("linux.resources.memory.limit {l} is below the current usage {usage}");
        }
    }
    let write_limit = || -> Result<()> {
        if let Some(l) = limit {
            write(dir, "memory.limit_in_bytes", &l.to_string())?;
        }
        Ok(())
    };
    match swap {
        Some(s) if exists(dir, "memory.memsw.limit_in_bytes") => {
            // memory.limit must stay <= memsw.limit at every step: raise memsw first when it
            // grows, lower the memory limit first when it shrinks.
            let current = read_u64(dir, "memory.memsw.limit_in_bytes")?;
            let memsw = || write(dir, "memory.memsw.limit_in_bytes", &s.to_string());
            if s < 0 || s as u64 > current {
                memsw()?;
                write_limit()?;
            } else {
                write_limit()?;
                memsw()?;
            }
        }
        Some(_) => {
            logging::warn(
                "swap accounting is off in this kernel: linux.resources.memory.swap ignored",
            );
            write_limit()?;
        }
        None => write_limit()?,
    }
    if let Some(res) = mem.reservation().filter(|&r| r != 0) {
        write(dir, "memory.soft_limit_in_bytes", &res.to_string())?;
    }
    if let Some(sw) = mem.swappiness() {
        if sw > 100 {
            bail!("linux.resources.memory.swappiness {sw} is above 100");
        }
        write(dir, "memory.swappiness", &sw.to_string())?;
    }
    if let Some(d) = mem.disable_oom_killer() {
        write(dir, "memory.oom_control", if d { "1" } else { "0" })?;
    }
    #[allow(deprecated)]
    if mem.kernel().is_some() {
        logging::warn("linux.resources.memory.kernel is obsolete since Linux 5.4 and ignored");
    }
    if let Some(t) = mem.kernel_tcp().filter(|&t| t != 0) {
        write(dir, "memory.kmem.tcp.limit_in_bytes", &t.to_string())?;
    }
    Ok(())
}

fn cpu_limits(m: &V1Driver, cpu: &LinuxCpu) -> Result<()> {
    let wants_cpu = cpu.shares().is_some_and(|s| s != 0)
        || cpu.quota().is_some_and(|q| q != 0)
        || cpu.period().is_some_and(|p| p != 0)
        || cpu.burst().is_some()
        || cpu.idle().is_some()
        || cpu.realtime_period().is_some_and(|p| p != 0)
        || cpu.realtime_runtime().is_some_and(|r| r != 0);
    if wants_cpu {
        let dir = need(m, "cpu", "cpu")?;
        if let Some(s) = cpu.shares().filter(|&s| s != 0) {
            write(dir, "cpu.shares", &s.to_string())?;
        }
        let quota = cpu.quota().filter(|&q| q != 0);
        if let Some(p) = cpu.period().filter(|&p| p != 0) {
            // The kernel checks period against the quota in force; if the old quota makes the
            // new period invalid, set the quota first and try again.
            if let Err(e) = write(dir, "cpu.cfs_period_us", &p.to_string()) {
                let Some(q) = quota else { return Err(e) };
                write(dir, "cpu.cfs_quota_us", &q.to_string())?;
                write(dir, "cpu.cfs_period_us", &p.to_string())?;
            }
        }
        if let Some(q) = quota {
            write(dir, "cpu.cfs_quota_us", &q.to_string())?;
        }
        if let Some(b) = cpu.burst() {
            write(dir, "cpu.cfs_burst_us", &b.to_string())?;
        }
        if let Some(p) = cpu.realtime_period().filter(|&p| p != 0) {
            write(dir, "cpu.rt_period_us", &p.to_string())?;
        }
        if let Some(r) = cpu.realtime_runtime().filter(|&r| r != 0) {
            write(dir, "cpu.rt_runtime_us", &r.to_string())?;
        }
        if let Some(i) = cpu.idle() {
            write(dir, "cpu.idle", &i.to_string())?;
        }
    }
    let cpus = cpu.cpus().as_deref().filter(|s| !s.is_empty());
    let mems = cpu.mems().as_deref().filter(|s| !s.is_empty());
    if cpus.is_some() || mems.is_some() {
        let dir = need(m, "cpuset", "cpu.cpus/mems")?;
        if let Some(c) = cpus {
            write(dir, "cpuset.cpus", c)?;
        }
        if let Some(mm) = mems {
            write(dir, "cpuset.mems", mm)?;
        }
    }
    Ok(())
}

fn blkio(dir: &Path, b: &LinuxBlockIo) -> Result<()> {
    // Without CFQ (gone since 5.0) only BFQ provides weights.
    let weight_file = if exists(dir, "blkio.weight") {
        "blkio.weight"
    } else {
        "blkio.bfq.weight"
    };
    if let Some(w) = b.weight().filter(|&w| w != 0) {
        if !exists(dir, weight_file) {
            bail!(
                "linux.resources.blockIO.weight: no blkio weight file (BFQ scheduler not in use)"
            );
        }
        write(dir, weight_file, &w.to_string())?;
    }
    if let Some(w) = b.leaf_weight().filter(|&w| w != 0) {
        if !exists(dir, "blkio.leaf_weight") {
            bail!("linux.resources.blockIO.leafWeight needs the CFQ scheduler, absent here");
        }
        write(dir, "blkio.leaf_weight", &w.to_string())?;
    }
    for d in b.weight_device().iter().flatten() {
        if let Some(w) = d.weight() {
            let file = format!("{weight_file}_device");
            write(dir, &file, &format!("{}:{} {w}", d.major(), d.minor()))?;
        }
        if let Some(w) = d.leaf_weight() {
            write(
                dir,
                "blkio.leaf_weight_device",
                &format!("{}:{} {w}", d.major(), d.minor()),
            )?;
        }
    }
    let throttles = [
        (
            b.throttle_read_bps_device(),
            "blkio.throttle.read_bps_device",
        ),
        (
            b.throttle_write_bps_device(),
            "blkio.throttle.write_bps_device",
        ),
        (
            b.throttle_read_iops_device(),
            "blkio.throttle.read_iops_device",
        ),
        (
            b.throttle_write_iops_device(),
            "blkio.throttle.write_iops_device",
        ),
    ];
    for (list, file) in throttles {
        for d in list.iter().flatten() {
            write(
                dir,
                file,
                &format!("{}:{} {}", d.major(), d.minor(), d.rate()),
            )?;
        }
    }
    Ok(())
}

fn freeze(dir: &Path) -> Result<()> {
    // FREEZING can linger while a task sleeps uninterruptibly: re-request and wait a bounded
    // time, then give up and thaw rather than leave the container half frozen.
    for i in 0..2000u32 {
        if i % 50 == 0 {
            write(dir, "freezer.state", "FROZEN")?;
        }
        if fs::read(dir, "freezer.state")?.trim() == "FROZEN" {
            return Ok(());
        }
        std::thread::sleep(Duration::from_micros(if i < 10 { 100 } else { 1000 }));
    }
    let _ = write(dir, "freezer.state", "THAWED");
    bail!("{}: processes did not freeze within 2 s", dir.display())
}

fn thaw(dir: &Path) -> Result<()> {
    write(dir, "freezer.state", "THAWED")
}

fn is_frozen(dir: &Path) -> Result<bool> {
    Ok(read_opt(dir, "freezer.state")?.is_some_and(|s| s.trim() == "FROZEN"))
}

/// USER_HZ: cpuacct.stat counts in these ticks.
fn clock_ticks() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as u64,
        _ => 100,
    }
}

fn numbers(text: &str) -> Vec<u64> {
    text.split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect()
}

fn stats(m: &V1Driver) -> Result<Stats> {
    let mut s = Stats::default();
    if let Some(dir) = m.v1_dir("cpuacct") {
        s.cpu.usage.total = read_u64_opt(dir, "cpuacct.usage")?.unwrap_or(0);
        if let Some(t) = read_opt(dir, "cpuacct.usage_percpu")? {
            s.cpu.usage.percpu = numbers(&t);
        }
        if let Some(t) = read_opt(dir, "cpuacct.usage_percpu_sys")? {
            s.cpu.usage.percpu_kernel = numbers(&t);
        }
        if let Some(t) = read_opt(dir, "cpuacct.usage_percpu_user")? {
            s.cpu.usage.percpu_user = numbers(&t);
        }
        if let Some(t) = read_opt(dir, "cpuacct.stat")? {
            let kv = fs::parse_flat_keyed(&t);
            let ns = 1_000_000_000 / clock_ticks();
            s.cpu.usage.user = kv.get("user").copied().unwrap_or(0) * ns;
            s.cpu.usage.kernel = kv.get("system").copied().unwrap_or(0) * ns;
        }
    }
    if let Some(dir) = m.v1_dir("cpu")
        && let Some(t) = read_opt(dir, "cpu.stat")?
    {
        let kv = fs::parse_flat_keyed(&t);
        s.cpu.throttling.periods = kv.get("nr_periods").copied().unwrap_or(0);
        s.cpu.throttling.throttled_periods = kv.get("nr_throttled").copied().unwrap_or(0);
        s.cpu.throttling.throttled_time = kv.get("throttled_time").copied().unwrap_or(0);
    }
    if let Some(dir) = m.v1_dir("memory") {
        let entry = |prefix: &str| -> Result<stats::MemoryEntry> {
            Ok(stats::MemoryEntry {
                limit: read_u64_opt(dir, &format!("{prefix}.limit_in_bytes"))?.unwrap_or(0),
                usage: read_u64_opt(dir, &format!("{prefix}.usage_in_bytes"))?.unwrap_or(0),
                max: read_u64_opt(dir, &format!("{prefix}.max_usage_in_bytes"))?.unwrap_or(0),
                failcnt: read_u64_opt(dir, &format!("{prefix}.failcnt"))?.unwrap_or(0),
            })
        };
        s.memory.usage = entry("memory")?;
        s.memory.swap = entry("memory.memsw")?;
        s.memory.kernel = entry("memory.kmem")?;
        s.memory.kernel_tcp = entry("memory.kmem.tcp")?;
        if let Some(t) = read_opt(dir, "memory.stat")? {
            s.memory.raw = fs::parse_flat_keyed(&t);
            s.memory.cache = s.memory.raw.get("cache").copied().unwrap_or(0);
        }
        if let Some(t) = read_opt(dir, "memory.oom_control")? {
            let kv = fs::parse_flat_keyed(&t);
            s.memory
                .raw
                .insert("oom_kill".into(), kv.get("oom_kill").copied().unwrap_or(0));
        }
    }
    if let Some(dir) = m.v1_dir("pids") {
        s.pids.current = read_u64_opt(dir, "pids.current")?.unwrap_or(0);
        s.pids.limit = match read_u64_opt(dir, "pids.max")? {
            Some(u64::MAX) | None => 0,
            Some(v) => v,
        };
    }
    if let Some(dir) = m.v1_dir("blkio") {
        // Throttle counters exist whatever the IO scheduler; bfq's only with BFQ.
        for prefix in ["blkio.throttle.", "blkio.bfq.", "blkio."] {
            if let Some(t) = read_opt(dir, &format!("{prefix}io_service_bytes_recursive"))? {
                s.blkio.io_service_bytes_recursive = stats::parse_blkio_v1(&t);
                if let Some(t) = read_opt(dir, &format!("{prefix}io_serviced_recursive"))? {
                    s.blkio.io_serviced_recursive = stats::parse_blkio_v1(&t);
                }
                break;
            }
        }
    }
    if let Some(dir) = m.v1_dir("hugetlb") {
        for size in fs::hugetlb_sizes(dir)? {
            let f = |n: &str| read_u64_opt(dir, &format!("hugetlb.{size}.{n}"));
            s.hugetlb.insert(
                size.clone(),
                stats::Hugetlb {
                    usage: f("usage_in_bytes")?.unwrap_or(0),
                    max: f("max_usage_in_bytes")?.unwrap_or(0),
                    failcnt: f("failcnt")?.unwrap_or(0),
                },
            );
        }
    }
    Ok(s)
}
