//! lrun as the program of systemd units, under a real systemd as PID 1 (run by
//! `scripts/systemd-suite` in a `scripts/vm-test --systemd` guest, on cgroup v2 and hybrid):
//! Type=notify readiness through lrun's NOTIFY_SOCKET relay, stop and SIGTERM, cleanup with
//! ExecStopPost, Restart=on-failure, socket activation, the journal, where the container's
//! cgroup lives, Delegate=yes, and a create/start container as a forking unit. The units are
//! the ones runtime-spec/systemd.md documents. Elsewhere every test skips.

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use serde_json::json;

const UNIT_DIR: &str = "/run/systemd/system";

/// The fixtures (built on the host, where these tests then skip: in the guest target/ is
/// read-only), then whether systemd is PID 1 here.
fn under_systemd() -> bool {
    sd_rootfs();
    if !Path::new("/run/systemd/system").exists() {
        lrun::test_support::skip("needs systemd as PID 1");
        return false;
    }
    true
}

/// A busybox rootfs with the static helpers of integration/fixtures in /bin: sd-notify (what
/// sd_notify(3) sends) and listen-serve (a socket-activated server).
fn sd_rootfs() -> &'static Path {
    const HELPERS: [&str; 2] = ["sd-notify", "listen-serve"];
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("systemd-rootfs");
        let src = |helper: &str| {
            format!(
                "{}/integration/fixtures/{helper}.c",
                env!("CARGO_MANIFEST_DIR")
            )
        };
        // Rebuilt when the helpers' sources differ from those it was built from.
        let stamp = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            for helper in HELPERS {
                fs::read(src(helper)).unwrap_or_default().hash(&mut h);
            }
            format!("{:016x}\n", h.finish())
        };
        let fresh = dir.join("run/notify").exists()
            && fs::read_to_string(dir.join(".sources")).is_ok_and(|s| s == stamp);
        if !fresh {
            let _ = fs::remove_dir_all(&dir);
            let tmp = dir.with_extension(format!("tmp{}", std::process::id()));
            let _ = fs::remove_dir_all(&tmp);
            make_busybox_rootfs(&tmp);
            // The notify relay's mount point: in the guest this rootfs is read-only.
            fs::create_dir_all(tmp.join("run/notify")).unwrap();
            for helper in HELPERS {
                let src = src(helper);
                let st = Command::new("cc")
                    .args(["-static", "-O2", "-o"])
                    .arg(tmp.join("bin").join(helper))
                    .arg(&src)
                    .status()
                    .expect("run cc");
                assert!(
                    st.success(),
                    "building {src} needs cc and static libc (libc6-dev)"
                );
            }
            fs::write(tmp.join(".sources"), &stamp).unwrap();
            let _ = fs::rename(&tmp, &dir);
            let _ = fs::remove_dir_all(&tmp);
        }
        dir
    })
}

/// A bundle on the systemd rootfs running `sh -c SCRIPT`, with the test's scratch directory
/// writable at /mnt (the program leaves its marks there).
fn bundle(env: &Env, name: &str, script: &str) -> Bundle {
    let mut b = env.bundle(name, &["sh", "-c", script]);
    b.config["root"]["path"] = json!(sd_rootfs());
    b.config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/mnt", "type": "bind", "source": env.scratch,
        "options": ["rbind", "rw"]}));
    b.write();
    b
}

/// `lrun --root ROOT` for a unit's command lines.
fn lrun_cmd(env: &Env) -> String {
    format!("{LRUN} --root {}", env.root.display())
}

/// ExecStart= of runtime-spec/systemd.md's service unit (with Delegate=yes): on pure cgroup v2
/// the main process first moves into the leaf UNIT/supervisor, so that the unit's own cgroup
/// has no process and lrun (whose relative cgroupsPath is taken from the parent of its own
/// cgroup) can put the container at UNIT/ID with controllers. On hybrid nothing moves.
/// `$$` is a literal `$` in unit files.
fn in_leaf(cmd: &str) -> String {
    format!(
        "/bin/sh -c 'd=/sys/fs/cgroup$$(sed -n \"s/^0:://p\" /proc/self/cgroup); \
         [ ! -f /sys/fs/cgroup/cgroup.controllers ] || \
         {{ mkdir -p $$d/supervisor && echo $$$$ >$$d/supervisor/cgroup.procs; }} || exit; \
         exec {cmd}'"
    )
}

/// runtime-spec/systemd.md's service unit: Type=notify, Delegate=yes, the container inside the
/// unit's cgroup, ExecStopPost cleanup; `extra` adds [Service] lines.
fn service_unit(env: &Env, b: &Bundle, id: &str, extra: &str) -> String {
    let l = lrun_cmd(env);
    format!(
        "[Service]\nType=notify\nDelegate=yes\n\
         ExecStart={}\nExecStopPost={l} delete --force {id}\n{extra}",
        in_leaf(&format!("{l} run --bundle {} {id}", b.path()))
    )
}

fn systemctl(args: &[&str]) -> String {
    let out = Command::new("systemctl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "systemctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `systemctl show` of some properties, in one call.
fn show(unit: &str, props: &[&str]) -> HashMap<String, String> {
    let mut args = vec!["show", unit];
    for p in props {
        args.extend(["-p", p]);
    }
    systemctl(&args)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The unit's journal (messages of the unit and of systemd about it), waiting up to 10 s for
/// `want` to show up: journald takes stream lines asynchronously.
fn journal(unit: &str, want: &str) -> String {
    journal_of(&["-u", unit], want, 10)
}

/// The journal entries `matches` selects, waiting up to `secs` for `want`.
fn journal_of(matches: &[&str], want: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let out = Command::new("journalctl")
            .args(matches)
            .args(["-o", "cat", "--no-pager"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains(want) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The units of one test, in /run/systemd/system; stopped and removed when the test ends
/// (before its Env checks for leaks: declare after the Env).
struct Units {
    names: Vec<String>,
}

impl Units {
    fn new() -> Units {
        Units { names: Vec::new() }
    }

    /// Write units (name, text). No daemon-reload: systemd reads a unit it has never loaded
    /// from disk when first asked for it (it notices the unit directory changed), and these
    /// names are new. A reload costs seconds under TCG and stalls every other systemctl call.
    fn install(&mut self, units: &[(&str, String)]) {
        for (name, text) in units {
            fs::write(Path::new(UNIT_DIR).join(name), text).unwrap();
            self.names.push(name.to_string());
        }
    }
}

impl Drop for Units {
    fn drop(&mut self) {
        if self.names.is_empty() {
            return;
        }
        let _ = Command::new("systemctl")
            .arg("stop")
            .args(&self.names)
            .status();
        let _ = Command::new("systemctl")
            .arg("reset-failed")
            .args(&self.names)
            .stderr(std::process::Stdio::null())
            .status();
        for n in &self.names {
            let _ = fs::remove_file(Path::new(UNIT_DIR).join(n));
        }
    }
}

/// A unit name for this test (unique across the test processes of a run).
fn unit_name(what: &str, suffix: &str) -> String {
    format!("lrt-{what}-{}.{suffix}", std::process::id())
}

fn alive(pid: i32) -> bool {
    // A zombie has no cmdline left to read; only a running process counts.
    fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

/// The children of a process (lrun's child is the container's init).
fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for t in fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
    {
        let t = t.unwrap().path();
        if let Ok(s) = fs::read_to_string(t.join("children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    out
}

fn cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default()
}

/// Nothing of container `id` is left: state dir, mounts below the test's dirs, cgroups (any
/// hierarchy, any depth), processes.
fn assert_nothing_left(env: &Env, id: &str, pids: &[i32]) {
    assert!(!env.root.join(id).exists(), "state dir of {id} left behind");
    let base = format!("{}/", env.root.parent().unwrap().display());
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let leaked: Vec<_> = mounts.lines().filter(|l| l.contains(&base)).collect();
    assert!(leaked.is_empty(), "mounts left: {leaked:#?}");
    let found = Command::new("find")
        .args(["/sys/fs/cgroup", "-type", "d", "-name", id])
        .output()
        .unwrap();
    assert!(
        found.stdout.is_empty(),
        "cgroups left for {id}: {}",
        String::from_utf8_lossy(&found.stdout)
    );
    for &p in pids {
        assert!(!alive(p), "process {p} ({}) still runs", cmdline(p));
    }
}

/// (hierarchy, path) pairs of /proc/PID/cgroup: "0" for cgroup v2, the controller list for v1.
fn cgroups_of(pid: i32) -> HashMap<String, String> {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let (_, ctl, path) = (it.next()?, it.next()?, it.next()?);
            let key = if ctl.is_empty() { "0" } else { ctl };
            Some((key.to_string(), path.to_string()))
        })
        .collect()
}

fn pure_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

fn parent(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &p[..i],
    }
}

/// Type=notify with lrun's relay and the default NotifyAccess=main: `systemctl start` returns
/// only once the program inside said READY=1, and its STATUS= arrives too. lrun stays the main
/// process (it supervises, forwards signals, deletes the container), as `runc run` does; the
/// container's init is its child.
#[test]
fn notify_unit_starts_only_when_the_container_says_ready() {
    if !under_systemd() {
        return;
    }
    let mut env = Env::new();
    let id = env.id("notify");
    let b = bundle(
        &env,
        "notify",
        "trap 'exit 0' TERM; sleep 3; touch /mnt/ready; \
         /bin/sd-notify 'READY=1\\nSTATUS=serving'; sleep 1000 & wait",
    );
    let unit = unit_name("notify", "service");
    let mut units = Units::new();
    units.install(&[(&unit, service_unit(&env, &b, &id, ""))]);
    let t0 = Instant::now();
    systemctl(&["start", &unit]);
    let returned = SystemTime::now();
    let elapsed = t0.elapsed();
    let ready = fs::metadata(env.scratch.join("ready"))
        .expect("systemctl start returned before the program got to READY=1")
        .modified()
        .unwrap();
    assert!(
        elapsed >= Duration::from_secs(3) && ready <= returned,
        "systemctl start returned after {elapsed:?}, before the program's READY=1"
    );
    let p = show(
        &unit,
        &[
            "ActiveState",
            "SubState",
            "StatusText",
            "NotifyAccess",
            "MainPID",
        ],
    );
    assert_eq!(
        (p["ActiveState"].as_str(), p["SubState"].as_str()),
        ("active", "running")
    );
    assert_eq!(p["StatusText"], "serving");
    assert_eq!(p["NotifyAccess"], "main");
    let main: i32 = p["MainPID"].parse().unwrap();
    assert_eq!(
        fs::read_link(format!("/proc/{main}/exe")).unwrap(),
        Path::new(LRUN),
        "MainPID is not lrun"
    );
    let init = env.state(&id)["pid"].as_i64().unwrap() as i32;
    assert_eq!(
        children(main),
        vec![init],
        "the container's init is not lrun's child"
    );
}

/// `systemctl stop`: SIGTERM reaches the program inside (it logs it), lrun exits with the
/// program's status, the unit is inactive and nothing of the container is left.
#[test]
fn stop_delivers_sigterm_and_leaves_nothing() {
    if !under_systemd() {
        return;
    }
    let mut env = Env::new();
    let id = env.id("stop");
    let b = bundle(
        &env,
        "stop",
        "trap 'echo program got SIGTERM; exit 0' TERM; /bin/sd-notify READY=1; \
         sleep 1000 & wait",
    );
    let unit = unit_name("stop", "service");
    let mut units = Units::new();
    units.install(&[(&unit, service_unit(&env, &b, &id, ""))]);
    systemctl(&["start", &unit]);
    let main: i32 = show(&unit, &["MainPID"])["MainPID"].parse().unwrap();
    let init = env.state(&id)["pid"].as_i64().unwrap() as i32;
    systemctl(&["stop", &unit]);
    let p = show(&unit, &["ActiveState", "Result", "ExecMainStatus"]);
    assert_eq!(
        (
            p["ActiveState"].as_str(),
            p["Result"].as_str(),
            p["ExecMainStatus"].as_str()
        ),
        ("inactive", "success", "0"),
        "{}",
        journal(&unit, "")
    );
    let log = journal(&unit, "program got SIGTERM");
    assert!(log.contains("program got SIGTERM"), "{log}");
    assert_nothing_left(&env, &id, &[main, init]);
}

/// The container's stdout and stderr are the unit's: both land in the journal.
#[test]
fn stdout_and_stderr_reach_the_journal() {
    if !under_systemd() {
        return;
    }
    let mut env = Env::new();
    let id = env.id("journal");
    let b = bundle(
        &env,
        "journal",
        "echo line-on-stdout; echo line-on-stderr >&2",
    );
    let unit = unit_name("journal", "service");
    let mut units = Units::new();
    units.install(&[(
        &unit,
        format!(
            "[Service]\nType=oneshot\nDelegate=yes\nExecStart={}\n",
            in_leaf(&format!(
                "{} run --bundle {} {id}",
                lrun_cmd(&env),
                b.path()
            ))
        ),
    )]);
    systemctl(&["start", &unit]);
    let log = journal(&unit, "line-on-stderr");
    assert!(
        log.contains("line-on-stdout") && log.contains("line-on-stderr"),
        "{log}"
    );
    assert_nothing_left(&env, &id, &[]);
}

/// lrun itself killed (SIGKILL, as a stop timeout would): the container outlives it, and the
/// unit's ExecStopPost (`lrun delete --force`) removes it and everything it held.
#[test]
fn exec_stop_post_cleans_up_after_lrun_is_killed() {
    if !under_systemd() {
        return;
    }
    let mut env = Env::new();
    let id = env.id("killed");
    let b = bundle(
        &env,
        "killed",
        "trap 'exit 0' TERM; /bin/sd-notify READY=1; sleep 1000 & wait",
    );
    let unit = unit_name("killed", "service");
    let mut units = Units::new();
    units.install(&[(&unit, service_unit(&env, &b, &id, ""))]);
    systemctl(&["start", &unit]);
    let main: i32 = show(&unit, &["MainPID"])["MainPID"].parse().unwrap();
    let init = env.state(&id)["pid"].as_i64().unwrap() as i32;
    systemctl(&["kill", "--kill-who=main", "--signal=KILL", &unit]);
    wait_until("the unit to stop after lrun's SIGKILL", 30, || {
        !matches!(
            show(&unit, &["ActiveState"])["ActiveState"].as_str(),
            "active" | "deactivating"
        )
    });
    let p = show(&unit, &["ActiveState", "Result"]);
    assert_eq!(p["Result"], "signal", "{p:?}");
    assert_nothing_left(&env, &id, &[main, init]);
}

/// Restart=on-failure: a program that crashes twice is restarted each time (NRestarts), with
/// the same container id, and then runs.
#[test]
fn restart_on_failure_restarts_a_crashed_container() {
    if !under_systemd() {
        return;
    }
    let mut env = Env::new();
    let id = env.id("restart");
    let b = bundle(
        &env,
        "restart",
        "n=$(cat /mnt/runs 2>/dev/null || echo 0); n=$((n + 1)); echo $n >/mnt/runs; \
         [ $n -ge 3 ] || { echo crash $n; exit 3; }; trap 'exit 0' TERM; \
         /bin/sd-notify READY=1; sleep 1000 & wait",
    );
    let unit = unit_name("restart", "service");
    let mut units = Units::new();
    units.install(&[(
        &unit,
        service_unit(&env, &b, &id, "Restart=on-failure\nRestartSec=100ms\n"),
    )]);
    // The first two starts fail; the restart job that follows the last is the one that
    // reaches active.
    let _ = Command::new("systemctl").args(["start", &unit]).status();
    wait_until("the third run to be ready", 60, || {
        let p = show(&unit, &["ActiveState", "SubState", "NRestarts"]);
        p["ActiveState"] == "active" && p["SubState"] == "running"
    });
    let p = show(&unit, &["NRestarts"]);
    assert_eq!(p["NRestarts"], "2");
    assert_eq!(
        fs::read_to_string(env.scratch.join("runs")).unwrap().trim(),
        "3"
    );
    let log = journal(&unit, "crash 2");
    assert!(log.contains("crash 1") && log.contains("crash 2"), "{log}");
    systemctl(&["stop", &unit]);
    assert_nothing_left(&env, &id, &[]);
}

/// Socket activation: systemd listens, a client's connection starts the service, lrun passes
/// the listening socket into the container (LISTEN_FDS=1, LISTEN_PID = the program's pid,
/// LISTEN_FDNAMES = the socket's FileDescriptorName, fd 3) and the containerised server answers.
#[test]
fn socket_activation_reaches_the_containerised_server() {
    if !under_systemd() {
        return;
    }
    let mut env = Env::new();
    let id = env.id("socket");
    let b = bundle(&env, "socket", "exec /bin/listen-serve");
    let name = unit_name("socket", "");
    let name = name.trim_end_matches('.');
    let path = format!("/run/{name}.sock");
    let (socket, service) = (format!("{name}.socket"), format!("{name}.service"));
    let mut units = Units::new();
    units.install(&[
        (
            &socket,
            format!("[Socket]\nListenStream={path}\nFileDescriptorName=web\n"),
        ),
        (&service, service_unit(&env, &b, &id, "Type=simple\n")),
    ]);
    systemctl(&["start", &socket]);
    assert_eq!(
        show(&service, &["ActiveState"])["ActiveState"],
        "inactive",
        "the service ran before any client"
    );
    let mut conn = std::os::unix::net::UnixStream::connect(&path).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert_eq!(
        answer.trim_end(),
        "hello from the container: LISTEN_FDS=1 LISTEN_PID=1 LISTEN_FDNAMES=web pid=1",
        "{}",
        journal(&service, "")
    );
    assert_eq!(show(&service, &["ActiveState"])["ActiveState"], "active");
    systemctl(&["stop", &service, &socket]);
    assert_nothing_left(&env, &id, &[]);
}

/// Without --systemd-cgroup the container's cgroup follows lrun's rule for a relative (or
/// absent) cgroupsPath, with lrun's own cgroup being the unit's: on pure v2 beside the unit
/// (the parent of lrun's cgroup, so /system.slice/ID: the unit's cgroup has lrun in it and, by
/// the no-internal-processes rule, could not give a child controllers), on hybrid below lrun's
/// cgroup in each v1 hierarchy. Either way the container is not in the unit's cgroup. journald
/// files a line under the unit its writer's cgroup belongs to: on v2 the container's output is
/// in the journal but not under `journalctl -u UNIT` (the reason for runtime-spec/systemd.md's
/// Delegate=yes unit); on hybrid the unified hierarchy has the container below the unit.
#[test]
fn container_cgroup_without_the_systemd_driver() {
    if !under_systemd() {
        return;
    }
    let mut env = Env::new();
    let id = env.id("placement");
    let b = bundle(
        &env,
        "placement",
        "trap 'exit 0' TERM; echo placement-output; /bin/sd-notify READY=1; sleep 1000 & wait",
    );
    let unit = unit_name("placement", "service");
    let mut units = Units::new();
    units.install(&[(
        &unit,
        format!(
            "[Service]\nType=notify\nExecStart={l} run --bundle {b} {id}\n\
             ExecStopPost={l} delete --force {id}\n",
            l = lrun_cmd(&env),
            b = b.path()
        ),
    )]);
    systemctl(&["start", &unit]);
    let p = show(&unit, &["MainPID", "ControlGroup"]);
    let main: i32 = p["MainPID"].parse().unwrap();
    let init = env.state(&id)["pid"].as_i64().unwrap() as i32;
    let (own, ctr) = (cgroups_of(main), cgroups_of(init));
    assert_eq!(
        own["0"], p["ControlGroup"],
        "lrun is not in the unit's cgroup"
    );
    if pure_v2() {
        assert_eq!(ctr["0"], format!("{}/{id}", parent(&p["ControlGroup"])));
        assert_eq!(ctr["0"], format!("/system.slice/{id}"));
    } else {
        for (h, path) in &ctr {
            if h == "0" || h.starts_with("name=") {
                continue;
            }
            let want = format!("{}/{id}", own[h].trim_end_matches('/'));
            assert_eq!(path, &want, "hierarchy {h}: {ctr:?}, lrun in {own:?}");
        }
    }
    assert_ne!(ctr["0"], p["ControlGroup"]);
    let by_cgroup = format!("_SYSTEMD_CGROUP={}", ctr["0"]);
    let log = journal_of(&[&by_cgroup], "placement-output", 10);
    assert!(log.contains("placement-output"), "{log}");
    let by_unit = journal_of(&["-u", &unit], "placement-output", 1);
    assert_eq!(
        by_unit.contains("placement-output"),
        !pure_v2(),
        "{by_unit}"
    );
}

/// runtime-spec/systemd.md's unit (Delegate=yes) keeps the container inside the unit's cgroup,
/// with its limits. On cgroup v2 the unit's own cgroup cannot hold processes and give its
/// children controllers at once (the no-internal-processes rule), so the main process moves to
/// UNIT/supervisor and the container is at UNIT/ID; systemd's control processes (ExecStopPost)
/// run in UNIT/.control. On hybrid the v1 hierarchies have no such rule: the container is at
/// UNIT/ID in each of them, and in the unified one (where systemd tracks the unit).
#[test]
fn delegated_unit_keeps_the_container_inside_its_cgroup() {
    if !under_systemd() {
        return;
    }
    let mut env = Env::new();
    let id = env.id("delegate");
    let mut b = bundle(
        &env,
        "delegate",
        "trap 'exit 0' TERM; /bin/sd-notify READY=1; sleep 1000 & wait",
    );
    b.config["linux"]["resources"]["memory"] = json!({"limit": 64 << 20});
    b.config["linux"]["resources"]["pids"] = json!({"limit": 50});
    b.write();
    let unit = unit_name("delegate", "service");
    let mut units = Units::new();
    units.install(&[(&unit, service_unit(&env, &b, &id, ""))]);
    systemctl(&["start", &unit]);
    let p = show(&unit, &["MainPID", "ControlGroup"]);
    let cg = &p["ControlGroup"];
    let main: i32 = p["MainPID"].parse().unwrap();
    let init = env.state(&id)["pid"].as_i64().unwrap() as i32;
    let ctr = cgroups_of(init);
    assert_eq!(ctr["0"], format!("{cg}/{id}"), "{ctr:?}");
    if pure_v2() {
        assert_eq!(cgroups_of(main)["0"], format!("{cg}/supervisor"));
        let dir = Path::new("/sys/fs/cgroup").join(&ctr["0"][1..]);
        let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap().trim().to_string();
        assert_eq!(read("memory.max"), (64u64 << 20).to_string());
        assert_eq!(read("pids.max"), "50");
    } else {
        assert_eq!(cgroups_of(main)["0"], *cg);
        for h in ["memory", "pids"] {
            assert_eq!(ctr[h], format!("{cg}/{id}"), "{ctr:?}");
        }
        let limit = fs::read_to_string(format!(
            "/sys/fs/cgroup/memory{}/memory.limit_in_bytes",
            ctr["memory"]
        ))
        .unwrap();
        assert_eq!(limit.trim(), (64u64 << 20).to_string());
    }
    systemctl(&["stop", &unit]);
    assert_nothing_left(&env, &id, &[init, main]);
}

/// The scheduler's case: a long-lived container made with `lrun create` and started with
/// `lrun start`, as a Type=forking unit. `create` returns once the container exists and
/// writes the init's pid to the PIDFile, so systemd's MainPID is the container's process;
/// ExecStop sends it SIGTERM through `lrun kill`, ExecStopPost deletes it.
#[test]
fn forking_unit_runs_a_created_and_started_container() {
    if !under_systemd() {
        return;
    }
    let mut env = Env::new();
    let id = env.id("forking");
    let b = bundle(
        &env,
        "forking",
        "trap 'echo program got SIGTERM; exit 0' TERM; echo program started; \
         sleep 1000 & wait",
    );
    let unit = unit_name("forking", "service");
    let pidfile = format!("/run/{unit}.pid");
    let l = lrun_cmd(&env);
    let mut units = Units::new();
    units.install(&[(
        &unit,
        format!(
            "[Service]\nType=forking\nDelegate=yes\nPIDFile={pidfile}\nExecStart={}\n\
             ExecStartPost={l} start {id}\nExecStop={l} kill {id} TERM\n\
             ExecStopPost={l} delete --force {id}\n",
            in_leaf(&format!(
                "{l} create --bundle {} --pid-file {pidfile} {id}",
                b.path()
            )),
        ),
    )]);
    systemctl(&["start", &unit]);
    let p = show(
        &unit,
        &["ActiveState", "SubState", "MainPID", "ControlGroup"],
    );
    assert_eq!(
        (p["ActiveState"].as_str(), p["SubState"].as_str()),
        ("active", "running")
    );
    let init = env.state(&id)["pid"].as_i64().unwrap() as i32;
    assert_eq!(
        p["MainPID"],
        init.to_string(),
        "MainPID is not the container's init"
    );
    assert_eq!(cgroups_of(init)["0"], format!("{}/{id}", p["ControlGroup"]));
    assert_eq!(env.status(&id), "running");
    let log = journal(&unit, "program started");
    assert!(log.contains("program started"), "{log}");
    systemctl(&["stop", &unit]);
    let p = show(&unit, &["ActiveState", "Result"]);
    assert_eq!(
        (p["ActiveState"].as_str(), p["Result"].as_str()),
        ("inactive", "success"),
        "{}",
        journal(&unit, "")
    );
    let log = journal(&unit, "program got SIGTERM");
    assert!(log.contains("program got SIGTERM"), "{log}");
    assert!(!Path::new(&pidfile).exists(), "PIDFile left behind");
    assert_nothing_left(&env, &id, &[init]);
}

/// The scheduler's case with readiness: `lrun run -d` (create, then start) as the Type=notify
/// main process. As `runc run -d`, start relays the program's READY=1 with MAINPID= the
/// container's init and returns, so systemd then watches the container itself. (`create` as an
/// ExecStartPre= would not do: systemd gives only the main process NOTIFY_SOCKET.)
#[test]
fn notify_detached_run_makes_the_container_the_main_pid() {
    if !under_systemd() {
        return;
    }
    let mut env = Env::new();
    let id = env.id("cstart");
    let b = bundle(
        &env,
        "cstart",
        "trap 'echo program got SIGTERM; exit 0' TERM; sleep 2; \
         /bin/sd-notify 'READY=1\\nSTATUS=up'; sleep 1000 & wait",
    );
    let unit = unit_name("cstart", "service");
    let l = lrun_cmd(&env);
    let mut units = Units::new();
    units.install(&[(
        &unit,
        format!(
            "[Service]\nType=notify\nDelegate=yes\nExecStart={}\n\
             ExecStop={l} kill {id} TERM\nExecStopPost={l} delete --force {id}\n",
            in_leaf(&format!("{l} run -d --bundle {} {id}", b.path()))
        ),
    )]);
    let t0 = Instant::now();
    systemctl(&["start", &unit]);
    let elapsed = t0.elapsed();
    let p = show(
        &unit,
        &[
            "ActiveState",
            "SubState",
            "MainPID",
            "StatusText",
            "ControlGroup",
        ],
    );
    assert_eq!(
        (p["ActiveState"].as_str(), p["SubState"].as_str()),
        ("active", "running"),
        "{}",
        journal(&unit, "")
    );
    assert!(
        elapsed >= Duration::from_secs(2),
        "started after {elapsed:?}"
    );
    assert_eq!(p["StatusText"], "up");
    let init = env.state(&id)["pid"].as_i64().unwrap() as i32;
    assert_eq!(
        p["MainPID"],
        init.to_string(),
        "MainPID is not the container's init"
    );
    assert_eq!(cgroups_of(init)["0"], format!("{}/{id}", p["ControlGroup"]));
    systemctl(&["stop", &unit]);
    let p = show(&unit, &["ActiveState", "Result"]);
    assert_eq!(
        (p["ActiveState"].as_str(), p["Result"].as_str()),
        ("inactive", "success"),
        "{}",
        journal(&unit, "")
    );
    let log = journal(&unit, "program got SIGTERM");
    assert!(log.contains("program got SIGTERM"), "{log}");
    assert_nothing_left(&env, &id, &[init]);
}

/// With --systemd-cgroup (lrun's systemd cgroup driver) the container runs in its own
/// transient scope, `lrun-ID.scope` in system.slice: a unit beside the service, which systemd
/// knows and shows, and under which journald files the container's output. lrun killed
/// (SIGKILL) leaves the scope to ExecStopPost's `lrun delete --force`, which stops it: no scope
/// is left behind (runc #3780).
#[test]
fn systemd_cgroup_unit_puts_the_container_in_its_own_scope() {
    if !under_systemd() {
        return;
    }
    let mut env = Env::new();
    let id = env.id("scope");
    let b = bundle(
        &env,
        "scope",
        "trap 'exit 0' TERM; echo scope-output; /bin/sd-notify READY=1; sleep 1000 & wait",
    );
    let unit = unit_name("scope", "service");
    let l = format!("{} --systemd-cgroup", lrun_cmd(&env));
    let mut units = Units::new();
    units.install(&[(
        &unit,
        format!(
            "[Service]\nType=notify\nExecStart={l} run --bundle {} {id}\n\
             ExecStopPost={l} delete --force {id}\n",
            b.path()
        ),
    )]);
    systemctl(&["start", &unit]);
    let init = env.state(&id)["pid"].as_i64().unwrap() as i32;
    let scope = format!("lrun-{id}.scope");
    let cg = cgroups_of(init)["0"].clone();
    if !cg.ends_with(".scope") {
        lrun::test_support::skip("the systemd cgroup driver is not in this build");
        return;
    }
    assert_eq!(cg, format!("/system.slice/{scope}"));
    let p = show(&scope, &["ActiveState", "ControlGroup", "Delegate"]);
    assert_eq!(
        (p["ActiveState"].as_str(), p["ControlGroup"].as_str()),
        ("active", cg.as_str())
    );
    let log = journal(&scope, "scope-output");
    assert!(log.contains("scope-output"), "{log}");
    systemctl(&["kill", "--kill-who=main", "--signal=KILL", &unit]);
    wait_until("the unit to stop after lrun's SIGKILL", 30, || {
        !matches!(
            show(&unit, &["ActiveState"])["ActiveState"].as_str(),
            "active" | "deactivating"
        )
    });
    let p = show(&scope, &["ActiveState", "LoadState"]);
    assert!(
        p["ActiveState"] == "inactive" || p["LoadState"] == "not-found",
        "scope left: {p:?}"
    );
    assert!(
        !Path::new("/sys/fs/cgroup").join(&cg[1..]).exists()
            && !Path::new("/sys/fs/cgroup/unified").join(&cg[1..]).exists(),
        "the scope's cgroup is left"
    );
    assert_nothing_left(&env, &id, &[init]);
}

/// What does not work on cgroup v2, and says why: a container cgroup below the unit's own
/// cgroup while lrun itself still runs there (Delegate=yes, an absolute cgroupsPath UNIT/ctr,
/// no leaf move). The kernel refuses the move with a bare EOPNOTSUPP/EBUSY; lrun names the
/// busy cgroup and the rule, fails the start, and leaves nothing.
#[test]
fn a_container_below_a_busy_unit_cgroup_fails_with_the_reason() {
    if !under_systemd() {
        return;
    }
    if !pure_v2() {
        lrun::test_support::skip("the no-internal-processes rule is cgroup v2's");
        return;
    }
    let mut env = Env::new();
    let id = env.id("busy");
    let unit = unit_name("busy", "service");
    let mut b = bundle(&env, "busy", "true");
    let ctr = format!("/system.slice/{unit}/ctr-{id}");
    b.config["linux"]["cgroupsPath"] = json!(ctr);
    b.write();
    let mut units = Units::new();
    units.install(&[(
        &unit,
        format!(
            "[Service]\nType=oneshot\nDelegate=yes\nExecStart={} run --bundle {} {id}\n",
            lrun_cmd(&env),
            b.path()
        ),
    )]);
    let st = Command::new("systemctl")
        .args(["start", &unit])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!st.success(), "the container started below a busy cgroup");
    let want = format!("/sys/fs/cgroup/system.slice/{unit} has processes of its own");
    let log = journal(&unit, &want);
    assert!(
        log.contains(&want) && log.contains("no-internal-processes"),
        "{log}"
    );
    assert!(!Path::new("/sys/fs/cgroup").join(&ctr[1..]).exists());
    assert_nothing_left(&env, &id, &[]);
}
