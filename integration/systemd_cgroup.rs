//! The systemd cgroup driver (`--systemd-cgroup`) under a real systemd: scopes, their
//! properties, update, pause, exec, delete, gc after a killed create. These run where PID 1
//! is systemd (the guest of scripts/systemd-suite, pure v2 and hybrid) and skip elsewhere;
//! the bad-input tests run everywhere.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn systemd_is_pid1() -> bool {
    Path::new("/run/systemd/system").is_dir()
        && fs::read_to_string("/proc/1/comm").is_ok_and(|c| c.trim() == "systemd")
}

macro_rules! need_systemd {
    () => {
        if !systemd_is_pid1() {
            lrun::test_support::skip("needs systemd as PID 1");
            return;
        }
    };
}

fn v2() -> bool {
    !Path::new("/sys/fs/cgroup/memory").exists()
}

/// `systemctl show -p P... UNIT` as (property, value) pairs.
fn show(unit: &str, props: &[&str]) -> std::collections::HashMap<String, String> {
    let mut c = Command::new("systemctl");
    c.arg("show");
    for p in props {
        c.args(["-p", p]);
    }
    let out = c.arg("--").arg(unit).output().expect("systemctl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn prop(unit: &str, p: &str) -> String {
    show(unit, &[p]).remove(p).unwrap_or_default()
}

/// systemd has forgotten the unit (a stopped transient unit is unloaded).
fn assert_unit_gone(unit: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = show(unit, &["LoadState", "ActiveState"]);
        if s.get("LoadState").map(String::as_str) == Some("not-found") {
            break;
        }
        assert!(Instant::now() < deadline, "{unit} is still there: {s:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Nor any directory of it, in any hierarchy.
    let found = Command::new("find")
        .args([
            "/sys/fs/cgroup",
            "-maxdepth",
            "5",
            "-type",
            "d",
            "-name",
            unit,
        ])
        .output()
        .unwrap();
    assert!(
        found.stdout.is_empty(),
        "cgroups left for {unit}: {}",
        String::from_utf8_lossy(&found.stdout)
    );
}

/// A unique scope for this test: (cgroupsPath, unit).
fn scope_path(id: &str) -> (String, String) {
    (format!("machine.slice:lrt:{id}"), format!("lrt-{id}.scope"))
}

/// The directory of `unit` in the hierarchy with `controller` ("" for cgroup2).
fn unit_dir(unit: &str, controller: &str) -> PathBuf {
    let cg = prop(unit, "ControlGroup");
    assert!(!cg.is_empty(), "{unit} has no ControlGroup");
    let base = match (v2(), controller) {
        (true, _) => PathBuf::from("/sys/fs/cgroup"),
        (false, "") => PathBuf::from("/sys/fs/cgroup/unified"),
        (false, "cpu") => PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"),
        (false, c) => Path::new("/sys/fs/cgroup").join(c),
    };
    base.join(cg.trim_start_matches('/'))
}

fn read(dir: &Path, file: &str) -> String {
    fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("read {}/{file}: {e}", dir.display()))
        .trim()
        .to_string()
}

fn sd(env: &Env, args: &[&str]) -> (bool, String) {
    let mut all = vec!["--systemd-cgroup"];
    all.extend_from_slice(args);
    env.quiet(&all)
}

fn pid_of(env: &Env, id: &str) -> i32 {
    env.state(id)["pid"].as_i64().unwrap() as i32
}

#[test]
fn scope_holds_the_container_with_its_limits_and_update_changes_them() {
    need_systemd!();
    let mut env = Env::new();
    let id = env.id("scope");
    let (path, unit) = scope_path(&id);
    let mut b = env.bundle("scope", &["sleep", "1000"]);
    b.config["linux"]["cgroupsPath"] = json!(path);
    b.config["linux"]["resources"] = json!({
        "memory": {"limit": 64 << 20},
        "pids": {"limit": 50},
        "cpu": {"quota": 50000, "period": 100000}
    });
    b.write();
    let (ok, err) = sd(&env, &["run", "-d", "--bundle", b.path(), &id]);
    assert!(ok, "{err}");

    let s = show(
        &unit,
        &[
            "ActiveState",
            "ControlGroup",
            "Delegate",
            "Description",
            "MemoryMax",
            "TasksMax",
            "CPUQuotaPerSecUSec",
            "Slice",
        ],
    );
    assert_eq!(s["ActiveState"], "active", "{s:?}");
    assert_eq!(s["ControlGroup"], format!("/machine.slice/{unit}"));
    assert_eq!(s["Slice"], "machine.slice");
    assert_eq!(s["Delegate"], "yes");
    assert!(
        s["Description"].starts_with(&format!("lrun container {id} root=")),
        "{s:?}"
    );
    assert_eq!(s["MemoryMax"], (64u64 << 20).to_string());
    assert_eq!(s["TasksMax"], "50");
    assert_eq!(s["CPUQuotaPerSecUSec"], "500ms");

    // The container's process is in the scope, and the limits are in the files.
    let pid = pid_of(&env, &id);
    let own = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(own.contains(&format!("/machine.slice/{unit}\n")), "{own}");
    if v2() {
        let d = unit_dir(&unit, "");
        assert_eq!(read(&d, "memory.max"), (64u64 << 20).to_string());
        assert_eq!(read(&d, "pids.max"), "50");
        assert_eq!(read(&d, "cpu.max"), "50000 100000");
    } else {
        assert_eq!(
            read(&unit_dir(&unit, "memory"), "memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert_eq!(read(&unit_dir(&unit, "pids"), "pids.max"), "50");
        assert_eq!(read(&unit_dir(&unit, "cpu"), "cpu.cfs_quota_us"), "50000");
        // systemd leaves the freezer at "/" in a delegated scope: lrun made and joined it.
        let f = Path::new("/sys/fs/cgroup/freezer/machine.slice").join(&unit);
        assert!(
            read(&f, "cgroup.procs")
                .lines()
                .any(|p| p == pid.to_string())
        );
    }

    // update goes through systemd (and the files).
    let (ok, err) = env.quiet(&["update", "--memory", "128M", "--pids-limit", "77", &id]);
    assert!(ok, "{err}");
    let s = show(&unit, &["MemoryMax", "TasksMax"]);
    assert_eq!(s["MemoryMax"], (128u64 << 20).to_string(), "{s:?}");
    assert_eq!(s["TasksMax"], "77");
    let pids_dir = unit_dir(&unit, if v2() { "" } else { "pids" });
    assert_eq!(read(&pids_dir, "pids.max"), "77");

    let (ok, err) = env.quiet(&["delete", "--force", &id]);
    assert!(ok, "{err}");
    assert_unit_gone(&unit);
}

#[test]
fn pause_resume_and_exec_use_the_scope() {
    need_systemd!();
    let mut env = Env::new();
    let id = env.id("pause");
    let (path, unit) = scope_path(&id);
    let mut b = env.bundle("pause", &["sleep", "1000"]);
    b.config["linux"]["cgroupsPath"] = json!(path);
    b.write();
    let (ok, err) = sd(&env, &["run", "-d", "--bundle", b.path(), &id]);
    assert!(ok, "{err}");

    let (ok, err) = env.quiet(&["pause", &id]);
    assert!(ok, "{err}");
    assert_eq!(env.status(&id), "paused");
    if v2() {
        assert_eq!(read(&unit_dir(&unit, ""), "cgroup.freeze"), "1");
    } else {
        let f = Path::new("/sys/fs/cgroup/freezer/machine.slice").join(&unit);
        assert_eq!(read(&f, "freezer.state"), "FROZEN");
    }
    let (ok, err) = env.quiet(&["resume", &id]);
    assert!(ok, "{err}");
    assert_eq!(env.status(&id), "running");

    // An exec'd process joins the container's cgroup, that is, the scope.
    let pid_file = env.scratch.join("exec.pid");
    let (ok, err) = env.quiet(&[
        "exec",
        "-d",
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
        "sleep",
        "1000",
    ]);
    assert!(ok, "{err}");
    let pid = fs::read_to_string(&pid_file).unwrap();
    let own = fs::read_to_string(format!("/proc/{}/cgroup", pid.trim())).unwrap();
    assert!(own.contains(&format!("/machine.slice/{unit}\n")), "{own}");
    assert_eq!(prop(&unit, "TasksCurrent"), "2");

    let (ok, err) = env.quiet(&["delete", "--force", &id]);
    assert!(ok, "{err}");
    assert_unit_gone(&unit);
    assert!(!Path::new(&format!("/proc/{}", pid.trim())).exists());
}

/// Start `lrun --systemd-cgroup create` with a createRuntime hook that puts a process in the
/// scope and waits; kill lrun with SIGKILL once it is there. The hook dies with lrun (its
/// pdeathsig), the process it started does not (as a container's process could outlive
/// lrun). Returns that process's id.
fn killed_create(env: &mut Env, id: &str, unit: &str, path: &str) -> i32 {
    let mark = env.scratch.join(format!("{id}.mark"));
    let mut b = env.bundle("killed", &["sleep", "1000"]);
    b.config["linux"]["cgroupsPath"] = json!(path);
    let script = format!(
        "sleep 1000 </dev/null >/dev/null 2>&1 & p=$!; \
         for f in /sys/fs/cgroup/machine.slice/{unit}/cgroup.procs /sys/fs/cgroup/*/machine.slice/{unit}/cgroup.procs; do \
         [ -e \"$f\" ] && echo $p > \"$f\"; done; echo $p > {m}; wait",
        m = mark.display()
    );
    b.config["hooks"] =
        json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", script]}]});
    b.write();
    let mut lrun = env
        .lrun()
        .args(["--systemd-cgroup", "create", "--bundle", b.path(), id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let hook = loop {
        if let Ok(p) = fs::read_to_string(&mark)
            && let Ok(p) = p.trim().parse::<i32>()
        {
            break p;
        }
        assert!(Instant::now() < deadline, "the hook never ran");
        std::thread::sleep(Duration::from_millis(20));
    };
    lrun.kill().unwrap();
    lrun.wait().unwrap();
    assert_eq!(
        prop(unit, "ActiveState"),
        "active",
        "the scope should outlive lrun"
    );
    hook
}

#[test]
fn gc_stops_the_scope_of_a_killed_create() {
    need_systemd!();
    let mut env = Env::new();
    let id = env.id("killed");
    let (path, unit) = scope_path(&id);
    let hook = killed_create(&mut env, &id, &unit, &path);
    let out = env.out(&["gc"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("removed {id}")));
    assert_unit_gone(&unit);
    assert!(!env.root.join(&id).exists());
    assert!(!Path::new(&format!("/proc/{hook}")).exists());
}

#[test]
fn gc_stops_a_scope_whose_container_state_is_gone() {
    need_systemd!();
    let mut env = Env::new();
    let id = env.id("orphan");
    let (path, unit) = scope_path(&id);
    let hook = killed_create(&mut env, &id, &unit, &path);
    // As after a delete that died half-way, or state removed by hand.
    fs::remove_dir_all(env.root.join(&id)).unwrap();
    let out = env.out(&["gc"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("stopped {unit}")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_unit_gone(&unit);
    // systemd stops a scope by killing what is in it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{hook}")).exists() {
        assert!(Instant::now() < deadline, "the scope's process survived");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Another root's scopes are not ours to stop: gc there finds nothing.
    let other = Env::new();
    let out = other.out(&["gc"]);
    assert!(String::from_utf8_lossy(&out.stdout).is_empty());
}

#[test]
fn a_failed_create_leaves_no_scope() {
    need_systemd!();
    let mut env = Env::new();
    let id = env.id("fail");
    let (path, unit) = scope_path(&id);
    let mut b = env.bundle("fail", &["/no/such/program"]);
    b.config["linux"]["cgroupsPath"] = json!(path);
    b.write();
    let (ok, err) = sd(&env, &["create", "--bundle", b.path(), &id]);
    assert!(!ok);
    assert!(err.contains("/no/such/program"), "{err}");
    assert_unit_gone(&unit);
    assert!(!env.root.join(&id).exists());
}

#[test]
fn a_limit_the_kernel_refuses_leaves_no_scope() {
    need_systemd!();
    let mut env = Env::new();
    let id = env.id("badcpu");
    let (path, unit) = scope_path(&id);
    let mut b = env.bundle("badcpu", &["sleep", "1000"]);
    b.config["linux"]["cgroupsPath"] = json!(path);
    // systemd takes the property (AllowedCPUs on v2); cpuset.cpus refuses a CPU that does
    // not exist, after the scope was made.
    b.config["linux"]["resources"] = json!({"cpu": {"cpus": "999"}});
    b.write();
    let (ok, err) = sd(&env, &["create", "--bundle", b.path(), &id]);
    assert!(!ok);
    assert!(err.contains("cpuset.cpus"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_unit_gone(&unit);
    assert!(!env.root.join(&id).exists());
}

#[test]
fn a_default_cgroups_path_is_lrun_id_scope_in_system_slice() {
    need_systemd!();
    let mut env = Env::new();
    let id = env.id("default");
    let unit = format!("lrun-{id}.scope");
    let b = env.bundle("default", &["sleep", "1000"]);
    b.write();
    let (ok, err) = sd(&env, &["create", "--bundle", b.path(), &id]);
    assert!(ok, "{err}");
    assert_eq!(prop(&unit, "ControlGroup"), format!("/system.slice/{unit}"));
    let (ok, err) = env.quiet(&["delete", "--force", &id]);
    assert!(ok, "{err}");
    assert_unit_gone(&unit);

    // A foreground run: the scope lives as long as the container.
    let b = env.bundle("fg", &["sh", "-c", "exit 3"]);
    b.write();
    let id = env.id("fg");
    let (code, err) = env.quiet_code(&["--systemd-cgroup", "run", "--bundle", b.path(), &id]);
    assert_eq!(code, 3, "{err}");
    assert_unit_gone(&format!("lrun-{id}.scope"));
}

#[test]
fn a_bad_cgroups_path_is_one_clear_line() {
    let mut env = Env::new();
    let id = env.id("badpath");
    let mut b = env.bundle("badpath", &["true"]);
    b.config["linux"]["cgroupsPath"] = json!("/k8s.io/abc");
    b.write();
    let (ok, err) = sd(&env, &["run", "--bundle", b.path(), &id]);
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "lrun: expected cgroupsPath to be of format \"slice:prefix:name\" for systemd cgroups, got \"/k8s.io/abc\" instead"
    );
    b.config["linux"]["cgroupsPath"] = json!("system:lrt:x");
    b.write();
    let (ok, err) = sd(&env, &["run", "--bundle", b.path(), &id]);
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("invalid slice \"system\""), "{err}");
    assert!(!env.root.join(&id).exists());
}

#[test]
fn without_systemd_the_flag_fails_in_one_line() {
    if systemd_is_pid1() {
        lrun::test_support::skip("systemd is PID 1 here");
        return;
    }
    let mut env = Env::new();
    let id = env.id("nosd");
    let b = env.bundle("nosd", &["true"]);
    b.write();
    let (ok, err) = sd(&env, &["run", "--bundle", b.path(), &id]);
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("lrun: --systemd-cgroup: no systemd answers on the system bus"),
        "{err}"
    );
    assert!(!env.root.join(&id).exists());
}

#[test]
fn features_report_the_systemd_driver() {
    let env = Env::new();
    let out = env.out(&["features"]);
    let f: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(f["linux"]["cgroup"]["systemd"], json!(true));
}

/// containerd's runc shim with the systemd cgroup option (what `SystemdCgroup = true` sets
/// for CRI) calls `lrun --systemd-cgroup` with a `slice:prefix:name` cgroupsPath: the task
/// lands in that scope, and nothing is left once it is deleted.
#[test]
fn containerd_shim_puts_the_task_in_its_scope() {
    need_systemd!();
    let have = |c: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !have("containerd") || !have("ctr") || !have("containerd-shim-runc-v2") {
        lrun::test_support::skip("needs containerd, ctr and containerd-shim-runc-v2");
        return;
    }
    let mut env = Env::new();
    let id = env.id("ctr");
    let unit = format!("ctr-{id}.scope");
    let w = env.scratch.join("containerd");
    let root_dir = w.join("rootfs");
    fs::create_dir_all(&w).unwrap();
    let cp = Command::new("cp")
        .arg("-a")
        .arg(rootfs())
        .arg(&root_dir)
        .status()
        .unwrap();
    assert!(cp.success());
    fs::create_dir_all(root_dir.join("run")).unwrap();
    let sock = w.join("c.sock");
    // The shim gives lrun --root RUNC_ROOT/NAMESPACE.
    let runc_root = w.join("runc");
    fs::write(
        w.join("config.toml"),
        format!(
            "version = 2\nroot = \"{w}/root\"\nstate = \"{w}/state\"\n\
             [grpc]\n  address = \"{s}\"\n[ttrpc]\n  address = \"{s}.ttrpc\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{w}/opt\"\n",
            w = w.display(),
            s = sock.display()
        ),
    )
    .unwrap();
    let mut containerd = Command::new("containerd")
        .arg("--config")
        .arg(w.join("config.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(w.join("containerd.log")).unwrap())
        .spawn()
        .unwrap();
    let ctr = |args: &[&str]| {
        Command::new("ctr")
            .arg("-a")
            .arg(&sock)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "containerd did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = ctr(&[
        "run",
        "-d",
        "--runc-binary",
        LRUN,
        "--runc-root",
        runc_root.to_str().unwrap(),
        "--runc-systemd-cgroup",
        "--cgroup",
        &format!("machine.slice:ctr:{id}"),
        "--rootfs",
        root_dir.to_str().unwrap(),
        &id,
        "sleep",
        "1000",
    ]);
    let ran = out.status.success();
    let s = show(&unit, &["ActiveState", "ControlGroup"]);
    let tasks = String::from_utf8_lossy(&ctr(&["task", "ls"]).stdout).into_owned();
    let _ = ctr(&["task", "kill", "-s", "9", &id]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ctr(&["task", "delete", &id]).status.success() && ran {
        assert!(Instant::now() < deadline, "ctr task delete");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = ctr(&["container", "delete", &id]);
    let _ = containerd.kill();
    let _ = containerd.wait();
    assert!(ran, "ctr run: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(s["ActiveState"], "active", "{s:?}\n{tasks}");
    assert_eq!(s["ControlGroup"], format!("/machine.slice/{unit}"));
    assert_unit_gone(&unit);
    let left: Vec<_> = fs::read_dir(runc_root.join("default"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "lrun state left: {left:?}");
}
