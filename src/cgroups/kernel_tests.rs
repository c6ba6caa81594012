//! Tests against the real kernel (root, this machine's layout). Each test uses its own
//! cgroup named after the test and the test process, and a guard that kills what it spawned
//! and destroys the cgroup even when an assertion fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::*;

use super::layout::{self, CgroupMount};
use super::*;

fn test_id(name: &str) -> String {
    format!("lrun-test-{}-{name}", std::process::id())
}

struct TestCg {
    m: std::boxed::Box<dyn CgroupDriver>,
    children: Vec<Child>,
    extra_dirs: Vec<PathBuf>,
}

impl TestCg {
    fn new(name: &str) -> TestCg {
        let m = new_driver(None, &test_id(name)).unwrap();
        m.create().unwrap();
        TestCg {
            m,
            children: Vec::new(),
            extra_dirs: Vec::new(),
        }
    }

    /// Start `script` under sh, in the cgroup before it does anything: the shell waits for a
    /// line on stdin that is sent only after add_pid.
    fn spawn(&mut self, script: &str) -> usize {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("read _; {script}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        self.children.push(child);
        self.m.add_pid(self.pid(self.children.len() - 1)).unwrap();
        stdin.write_all(b"go\n").unwrap();
        self.children.len() - 1
    }

    fn pid(&self, i: usize) -> i32 {
        self.children[i].id() as i32
    }

    fn wait(&mut self, i: usize, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.children[i].try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for TestCg {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.m.destroy();
        for d in self.extra_dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap()
        .trim()
        .to_string()
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn memory(limit: i64) -> LinuxMemory {
    LinuxMemoryBuilder::default().limit(limit).build().unwrap()
}

#[test]
fn lifecycle_limits_freeze_and_destroy() {
    let mut t = TestCg::new("life");
    let rec = t.m.record();
    assert_ne!(rec.driver, DriverKind::None);
    for p in t.m.paths() {
        assert!(p.is_dir(), "{} not created", p.display());
    }
    let r = LinuxResourcesBuilder::default()
        .memory(memory(64 << 20))
        .pids(LinuxPidsBuilder::default().limit(20).build().unwrap())
        .cpu(
            LinuxCpuBuilder::default()
                .quota(50_000)
                .period(100_000u64)
                .shares(512u64)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    t.m.set(&r).unwrap();
    if rec.driver != DriverKind::CgroupfsV2 {
        let mem = rec.v1_dir("memory").unwrap();
        assert_eq!(
            read(mem, "memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert_eq!(read(rec.v1_dir("pids").unwrap(), "pids.max"), "20");
        let cpu = rec.v1_dir("cpu").unwrap();
        assert_eq!(read(cpu, "cpu.cfs_quota_us"), "50000");
        assert_eq!(read(cpu, "cpu.shares"), "512");
        let devs = read(rec.v1_dir("devices").unwrap(), "devices.list");
        assert!(devs.contains("c 1:3 rwm"), "{devs}");
        assert!(!devs.contains("a *:* rwm"), "{devs}");
    } else {
        let dir = rec.unified.clone().unwrap();
        assert_eq!(read(&dir, "memory.max"), (64u64 << 20).to_string());
        assert_eq!(read(&dir, "pids.max"), "20");
        assert_eq!(read(&dir, "cpu.max"), "50000 100000");
        assert_eq!(bpf::attached_count(&dir).unwrap(), 1);
    }

    let i = t.spawn("while :; do :; done");
    let pid = t.pid(i);
    assert!(t.m.pids().unwrap().contains(&pid));
    if let Some(u) = &rec.unified {
        assert!(read(u, "cgroup.procs").contains(&pid.to_string()));
    }

    t.m.freeze().unwrap();
    assert!(t.m.is_frozen().unwrap());
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(cpu_ticks(pid), before, "a frozen process kept running");
    t.m.thaw().unwrap();
    assert!(!t.m.is_frozen().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    assert!(cpu_ticks(pid) > before, "a thawed process did not run");

    // Destroy works on a frozen cgroup too.
    t.m.freeze().unwrap();
    t.m.destroy().unwrap();
    for p in t.m.paths() {
        assert!(!p.exists(), "{} left behind", p.display());
    }
    let status = t
        .wait(i, Duration::from_secs(5))
        .expect("process survived destroy");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    t.m.destroy().unwrap();
}

#[test]
fn memory_hog_is_oom_killed_and_reported() {
    let mut t = TestCg::new("oom");
    let r = LinuxResourcesBuilder::default()
        .memory(memory(32 << 20))
        .build()
        .unwrap();
    t.m.set(&r).unwrap();
    let mut watcher = t.m.oom_watcher().unwrap().expect("memory cgroup");
    // dd fills a 256 MiB buffer from /dev/zero: far above the limit.
    let i = t.spawn("exec dd if=/dev/zero of=/dev/null bs=256M count=1");
    let status = t
        .wait(i, Duration::from_secs(20))
        .expect("hog still running");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    let woke = watcher.wait(Duration::from_secs(5)).unwrap();
    assert!(matches!(woke, oom::Wake::Oom(n) if n >= 1));
    assert!(t.m.oom_kills().unwrap() >= 1);
    let s = t.m.stats().unwrap();
    assert_eq!(s.memory.usage.limit, 32 << 20);
    if t.m.record().driver != DriverKind::CgroupfsV2 {
        assert!(s.memory.usage.failcnt > 0);
    }
}

#[test]
fn fork_bomb_stops_at_pids_limit() {
    let mut t = TestCg::new("pids");
    let r = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(8).build().unwrap())
        .build()
        .unwrap();
    t.m.set(&r).unwrap();
    // 40 bounded sleepers; forks past the limit fail and the shell gives up.
    let i = t.spawn(
        "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 \
                     21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40; \
                     do sleep 20 & done; wait",
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = t.m.stats().unwrap();
        assert!(
            s.pids.current <= 8,
            "pids.current {} above limit",
            s.pids.current
        );
        assert_eq!(s.pids.limit, 8);
        if s.pids.current == 8 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let n = t.m.pids().unwrap().len();
    assert!((2..=8).contains(&n), "{n} processes");
    let rec = t.m.record();
    let pids_dir = match rec.driver {
        DriverKind::CgroupfsV2 => rec.unified.clone(),
        _ => rec.v1_dir("pids").map(Path::to_path_buf),
    };
    if let Some(dir) = pids_dir {
        let ev = fs::parse_flat_keyed(&read(&dir, "pids.events"));
        assert!(
            ev.get("max").copied().unwrap_or(0) > 0,
            "no fork was refused"
        );
    }
    t.m.destroy().unwrap();
    assert!(t.wait(i, Duration::from_secs(5)).is_some());
    assert!(t.m.pids().unwrap().is_empty());
}

#[test]
fn cpu_quota_caps_usage() {
    let mut t = TestCg::new("cpu");
    let r = LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .quota(10_000)
                .period(100_000u64)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    t.m.set(&r).unwrap();
    t.spawn("while :; do :; done");
    let start = t.m.stats().unwrap().cpu.usage.total;
    let began = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    let used = t.m.stats().unwrap().cpu.usage.total - start;
    let wall = began.elapsed().as_nanos() as u64;
    // 10% quota: allow up to 25% of wall time, and demand some progress.
    assert!(
        used < wall / 4,
        "used {used} ns of {wall} ns under a 10% quota"
    );
    assert!(used > wall / 100, "busy loop barely ran: {used} ns");
    assert!(t.m.stats().unwrap().cpu.throttling.throttled_periods > 0);
}

#[test]
fn denied_device_cannot_be_opened() {
    let mut t = TestCg::new("dev");
    let rec = t.m.record();
    if rec.v1_dir("devices").is_none() && rec.driver != DriverKind::CgroupfsV2 {
        return crate::test_support::skip("no device controller: neither v1 devices nor cgroup2");
    }
    t.m.set(&LinuxResources::default()).unwrap();
    // /dev/kmsg (1:11) is not in the default list; /dev/urandom is.
    let denied = t.spawn("exec 3</dev/kmsg");
    let allowed = t.spawn("exec 3</dev/urandom");
    let d = t.wait(denied, Duration::from_secs(5)).unwrap();
    let a = t.wait(allowed, Duration::from_secs(5)).unwrap();
    assert!(!d.success(), "/dev/kmsg opened despite the device list");
    assert!(a.success(), "/dev/urandom refused");
}

#[test]
fn update_changes_only_given_fields() {
    let mut t = TestCg::new("upd");
    let r = LinuxResourcesBuilder::default()
        .memory(memory(64 << 20))
        .pids(LinuxPidsBuilder::default().limit(50).build().unwrap())
        .build()
        .unwrap();
    t.m.set(&r).unwrap();
    // The shell keeps a 4 MB string in memory, charged to the cgroup.
    t.spawn("x=$(head -c 4000000 /dev/zero | tr '\\0' a); sleep 20");
    let u = LinuxResourcesBuilder::default()
        .memory(memory(48 << 20))
        .build()
        .unwrap();
    t.m.update(&u).unwrap();
    let s = t.m.stats().unwrap();
    assert_eq!(s.memory.usage.limit, 48 << 20);
    assert_eq!(s.pids.limit, 50);
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.m.stats().unwrap().memory.usage.usage < 3 << 20 {
        assert!(Instant::now() < deadline, "memory use never grew");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A limit under the current usage is refused when asked to check.
    let low = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(1 << 20)
                .check_before_update(true)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    assert!(t.m.update(&low).is_err());
    assert_eq!(t.m.stats().unwrap().memory.usage.limit, 48 << 20);
}

#[test]
fn relative_cgroups_path_nests_under_own_cgroup() {
    let id = test_id("nest");
    let m = new_driver(Some(Path::new(&format!("{id}-pod/{id}"))), "ignored").unwrap();
    let rec = m.record();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let own = layout::parse_proc_cgroup(&own).unwrap();
    let mem_own = own
        .iter()
        .find(|o| o.controllers.iter().any(|c| c == "memory"));
    if let (Some(dir), Some(o)) = (rec.v1_dir("memory"), mem_own) {
        let want = format!("{}/{id}-pod/{id}", o.path.trim_end_matches('/'));
        assert!(
            dir.to_string_lossy().ends_with(&want),
            "{} does not end with {want}",
            dir.display()
        );
    }
}

/// The pure-v2 code path on a real cgroup2 tree: a private subtree of this machine's cgroup2
/// mount stands in for the mount point, so nothing outside it is written.
#[test]
fn v2_manager_freezes_kills_and_filters_devices() {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let h = layout::detect(&mountinfo, &own).unwrap();
    let Some((mount, own_v2)) = h.v2.clone() else {
        return crate::test_support::skip("no cgroup2 mount on this machine");
    };
    let Some(rel) = own_v2.strip_prefix('/') else {
        return crate::test_support::skip("our cgroup2 path is not absolute");
    };
    if h.mode == Mode::Unified {
        return crate::test_support::skip(
            "pure cgroup v2: the ordinary tests above already cover this path",
        );
    }
    let base = mount.mount_point.join(rel).join(test_id("v2base"));
    std::fs::create_dir(&base).unwrap();
    let fake = layout::Hierarchies {
        mode: Mode::Unified,
        v1: Vec::new(),
        v2: Some((
            CgroupMount {
                root: "/".into(),
                mount_point: base.clone(),
                v2: true,
                controllers: Vec::new(),
            },
            "/".into(),
        )),
    };
    let m = driver_for_layout(&fake, None, &test_id("v2")).unwrap();
    m.create().unwrap();
    let mut t = TestCg {
        m,
        children: Vec::new(),
        extra_dirs: vec![base.clone()],
    };
    let dir = t.m.record().unified.unwrap();
    assert_eq!(dir, base.join(test_id("v2")));
    let r = LinuxResourcesBuilder::default()
        .unified(
            [("cgroup.max.descendants".to_string(), "3".to_string())]
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        )
        .build()
        .unwrap();
    t.m.set(&r).unwrap();
    assert_eq!(read(&dir, "cgroup.max.descendants"), "3");
    assert_eq!(bpf::attached_count(&dir).unwrap(), 1);
    // Setting again replaces the program rather than stacking a second one.
    t.m.set(&r).unwrap();
    assert_eq!(bpf::attached_count(&dir).unwrap(), 1);

    let denied = t.spawn("exec 3</dev/kmsg");
    let allowed = t.spawn("exec 3</dev/urandom");
    assert!(!t.wait(denied, Duration::from_secs(5)).unwrap().success());
    assert!(t.wait(allowed, Duration::from_secs(5)).unwrap().success());

    let busy = t.spawn("while :; do :; done");
    let pid = t.pid(busy);
    assert_eq!(t.m.pids().unwrap(), vec![pid]);
    t.m.freeze().unwrap();
    assert!(t.m.is_frozen().unwrap());
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(cpu_ticks(pid), before);
    t.m.thaw().unwrap();
    assert!(t.m.stats().is_ok());
    t.m.destroy().unwrap();
    assert!(!dir.exists());
    assert!(t.wait(busy, Duration::from_secs(5)).is_some());
}

/// Hybrid layout without the v1 devices controller: the rules go to cgroup2 as BPF.
#[test]
fn hybrid_without_devices_controller_uses_bpf() {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let mut h = layout::detect(&mountinfo, &own).unwrap();
    if h.mode != Mode::Hybrid {
        return crate::test_support::skip("the cgroup layout is not hybrid");
    }
    h.v1.retain(|x| !x.controllers.iter().any(|c| c == "devices"));
    let m = driver_for_layout(&h, None, &test_id("hyb-bpf")).unwrap();
    m.create().unwrap();
    let mut t = TestCg {
        m,
        children: Vec::new(),
        extra_dirs: Vec::new(),
    };
    let Some(u) = t.m.record().unified.filter(|u| u.exists()) else {
        return crate::test_support::skip(
            "no cgroup2 directory could be made in the hybrid layout",
        );
    };
    t.m.set(&LinuxResources::default()).unwrap();
    assert_eq!(bpf::attached_count(&u).unwrap(), 1);
    let denied = t.spawn("exec 3</dev/kmsg");
    let allowed = t.spawn("exec 3</dev/null");
    assert!(!t.wait(denied, Duration::from_secs(5)).unwrap().success());
    assert!(t.wait(allowed, Duration::from_secs(5)).unwrap().success());
}

#[test]
fn populated_cgroup_is_not_adopted_and_caller_is_never_killed() {
    let mut t = TestCg::new("guard");
    let i = t.spawn("sleep 20");
    let pid = t.pid(i);
    // A second container given the same cgroup must not take it over.
    let other = new_driver(None, &test_id("guard")).unwrap();
    assert!(other.create().is_err());
    // If the caller were inside, destroy must refuse rather than kill everything there.
    assert!(kill_all_but(&*t.m, pid).is_err());
    assert!(
        t.wait(i, Duration::from_millis(200)).is_none(),
        "the process was killed"
    );
    t.m.destroy().unwrap();
    assert!(t.wait(i, Duration::from_secs(5)).is_some());
}

#[test]
fn destroy_removes_empty_cgroups_at_once_and_nested_ones_deepest_first() {
    // Empty (the common case after a container exited): one rmdir per directory.
    let t = TestCg::new("empty");
    t.m.destroy().unwrap();
    for p in t.m.paths() {
        assert!(!p.exists(), "{} left behind", p.display());
    }
    t.m.destroy().unwrap();

    // A child cgroup the container made and a process still inside: the parent's rmdir fails
    // (EBUSY), and the full path kills the process and removes the child, then the parent.
    let mut t = TestCg::new("nested");
    let subs: Vec<PathBuf> = t.m.paths().iter().map(|p| p.join("sub")).collect();
    for s in &subs {
        std::fs::create_dir(s).unwrap();
    }
    let i = t.spawn("sleep 20");
    t.m.destroy().unwrap();
    for p in
        t.m.paths()
            .iter()
            .copied()
            .chain(subs.iter().map(|s| s.as_path()))
    {
        assert!(!p.exists(), "{} left behind", p.display());
    }
    assert!(
        t.wait(i, Duration::from_secs(5)).is_some(),
        "process survived destroy"
    );
}
