//! Resource limits enforced for real on containers, and the cgroup commands: pause, resume,
//! ps, events, update. Containers use relative (or no) cgroupsPath only: they nest beneath the
//! caller's own cgroups.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn detached(env: &mut Env, name: &str, args: &[&str], f: impl FnOnce(&mut Bundle)) -> String {
    let id = env.id(name);
    let mut b = env.bundle(name, args);
    f(&mut b);
    b.write();
    let (ok, err) = env.quiet(&["run", "-d", "--bundle", b.path(), &id]);
    assert!(ok, "{err}");
    id
}

#[test]
fn memory_hog_is_oom_killed_and_the_oom_shows_in_events() {
    let mut env = Env::new();
    let mut b = env.bundle("oom", &["sh", "-c", "x=a; while true; do x=$x$x; done"]);
    b.config["linux"]["resources"]["memory"] = json!({"limit": 32 << 20, "swap": 32 << 20});
    let (code, _, err) = run(&mut env, &b);
    assert_eq!(code, 128 + 9, "the hog was not OOM-killed: {err}");
}

/// runc's events loop: an OOM in the container is reported as {"type":"oom","id":...}.
#[test]
fn events_reports_an_oom_as_it_happens() {
    use std::io::BufRead;
    let mut env = Env::new();
    let id = detached(&mut env, "oomstream", &["sh", "-c", "sleep 1000"], |b| {
        b.config["linux"]["resources"]["memory"] = json!({"limit": 32 << 20, "swap": 32 << 20});
    });
    let mut events = env
        .lrun()
        .args(["events", "--interval", "60s", &id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = events.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    // As runc's events.bats: the hog is an exec'd process, started once events has begun.
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("no first event");
    assert!(first.contains(&id), "{first}");
    let (ok, err) = env.quiet(&[
        "exec",
        "-d",
        &id,
        "sh",
        "-c",
        "test=$(dd if=/dev/urandom ibs=5120k)",
    ]);
    assert!(ok, "{err}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut oom = None;
    while oom.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                if v["type"] == "oom" {
                    oom = Some(v);
                }
            }
            Err(_) => break,
        }
    }
    let _ = events.kill();
    let _ = events.wait();
    assert!(env.quiet(&["delete", "--force", &id]).0);
    let oom = oom.expect("no oom event from lrun events");
    assert_eq!(oom["id"], json!(id));
}

#[test]
fn oom_count_is_reported_by_events_stats() {
    let mut env = Env::new();
    let id = detached(
        &mut env,
        "oomev",
        &[
            "sh",
            "-c",
            "sleep 0.2; (x=a; while true; do x=$x$x; done); sleep 1000",
        ],
        |b| {
            b.config["linux"]["resources"]["memory"] = json!({"limit": 32 << 20, "swap": 32 << 20});
        },
    );
    wait_for("an OOM kill", || {
        let out = env.out(&["events", "--stats", &id]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let mem = &v["data"]["memory"];
        // v1 reports it as memory.oom_control's oom_kill, v2 as memory.events' oom_kill.
        mem["raw"]["oom_kill"].as_u64().unwrap_or(0) > 0
    });
    assert!(env.quiet(&["delete", "--force", &id]).0);
}

#[test]
fn fork_bomb_stops_at_the_pids_limit() {
    let mut env = Env::new();
    let out = sh(
        &mut env,
        |b| {
            b.config["linux"]["resources"]["pids"] = json!({"limit": 10});
        },
        "sh -c 'i=0; while [ $i -lt 30 ]; do sleep 5 & i=$((i+1)); done' 2>/dev/null; \
        { read n < /sys/fs/cgroup/pids/pids.current || read n < /sys/fs/cgroup/pids.current; } 2>/dev/null; \
        kill -9 -1; echo $n",
    );
    // The bomb runs in a child shell (a shell that cannot fork gives up); the outer one then
    // uses builtins only: at the limit, nothing can fork.
    let current: u32 = out.trim().parse().unwrap();
    assert!(current <= 10, "{current} processes under pids.limit 10");
    assert!(current >= 5, "the loop did not start processes ({current})");
}

#[test]
fn cpu_quota_caps_usage() {
    let mut env = Env::new();
    let id = detached(
        &mut env,
        "cpu",
        &["sh", "-c", "while true; do :; done"],
        |b| {
            b.config["linux"]["resources"]["cpu"] = json!({"quota": 10000, "period": 100000});
        },
    );
    let usage = |env: &Env| -> u64 {
        let out = env.out(&["events", "--stats", &id]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["data"]["cpu"]["usage"]["total"].as_u64().unwrap()
    };
    let t0 = Instant::now();
    let u0 = usage(&env);
    std::thread::sleep(Duration::from_secs(2));
    let used = (usage(&env) - u0) as f64 / t0.elapsed().as_nanos() as f64;
    // 10% quota; generous margin for a noisy 2-core machine.
    assert!(used < 0.3, "cpu share {used:.2} above a 10% quota");
    assert!(used > 0.01, "the busy loop did not run at all ({used:.3})");
    assert!(env.quiet(&["delete", "--force", &id]).0);
}

#[test]
fn a_denied_device_cannot_be_opened() {
    let mut env = Env::new();
    let out = sh(
        &mut env,
        |b| {
            // A node for /dev/kmsg exists in the container, but the cgroup denies it.
            b.config["linux"]["devices"] = json!([]);
            b.config["mounts"].as_array_mut().unwrap().push(json!({"destination": "/dev/kmsg", "type": "bind", "source": "/dev/kmsg", "options": ["bind"]}));
        },
        "head -c1 /dev/kmsg >/dev/null 2>&1 && echo OPENED || echo denied; head -c1 /dev/urandom | wc -c",
    );
    assert_eq!(out, "denied\n1\n");
}

#[test]
fn pause_freezes_and_resume_continues() {
    let mut env = Env::new();
    let id = detached(
        &mut env,
        "pause",
        &[
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.02; done",
        ],
        |b| {
            b.config["root"]["readonly"] = json!(false);
            b.config["mounts"]
                .as_array_mut()
                .unwrap()
                .push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
        },
    );
    let count = |env: &Env| -> u64 {
        let out = env.out(&["exec", &id, "cat", "/tmp/count"]);
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    };
    wait_for("the counter", || count(&env) > 2);
    assert!(env.quiet(&["pause", &id]).0);
    assert_eq!(env.status(&id), "paused");
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    let frozen_at = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // exec into a frozen container would hang: read the counter's state from outside instead.
    let still = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let utime = |s: &str| {
        s.rsplit(')')
            .next()
            .unwrap()
            .split(' ')
            .nth(12)
            .unwrap()
            .to_string()
    };
    assert_eq!(
        utime(&frozen_at),
        utime(&still),
        "the container ran while paused"
    );
    assert!(env.quiet(&["resume", &id]).0);
    assert_eq!(env.status(&id), "running");
    let c1 = count(&env);
    wait_for("the counter to advance after resume", || count(&env) > c1);
    // delete --force works on a paused container too.
    assert!(env.quiet(&["pause", &id]).0);
    let (ok, err) = env.quiet(&["delete", "--force", &id]);
    assert!(ok, "{err}");
}

#[test]
fn ps_lists_the_container_processes() {
    let mut env = Env::new();
    let id = detached(
        &mut env,
        "ps",
        &["sh", "-c", "sleep 1000 & sleep 1000 & wait"],
        |_| {},
    );
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    wait_for("two processes", || {
        let out = env.out(&["ps", "--format", "json", &id]);
        serde_json::from_slice::<Vec<i64>>(&out.stdout).is_ok_and(|v| v.len() >= 3)
    });
    let pids: Vec<i64> =
        serde_json::from_slice(&env.out(&["ps", "--format", "json", &id]).stdout).unwrap();
    assert!(pids.contains(&pid));
    assert!(env.quiet(&["kill", "--all", &id, "KILL"]).0);
    wait_for("all processes gone", || env.status(&id) == "stopped");
    assert!(env.quiet(&["delete", &id]).0);
}

#[test]
fn update_changes_a_live_limit() {
    let mut env = Env::new();
    let id = detached(&mut env, "upd", &["sleep", "1000"], |b| {
        b.config["linux"]["resources"]["pids"] = json!({"limit": 50});
    });
    let (ok, err) = env.quiet(&["update", "--pids-limit", "20", &id]);
    assert!(ok, "{err}");
    let out = env.out(&["exec", &id, "cat", "/sys/fs/cgroup/pids/pids.max"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let out2 = env.out(&["exec", &id, "cat", "/sys/fs/cgroup/pids.max"]);
    let text2 = String::from_utf8_lossy(&out2.stdout).into_owned();
    assert!(
        text.trim() == "20" || text2.trim() == "20",
        "pids.max not updated: {text:?} {text2:?}"
    );
    assert!(env.quiet(&["delete", "--force", &id]).0);
}

/// Absolute cgroupsPath places the container exactly there. Only where absolute paths are
/// safe to use: the cgroup v2 VM (scripts/vm-suite sets LRUN_TEST_ABSOLUTE_CGROUPS=1); on a
/// shared machine an absolute path could leave the machine's own cgroup, so it is skipped.
#[test]
fn absolute_cgroups_path_is_honoured_on_a_dedicated_machine() {
    if std::env::var("LRUN_TEST_ABSOLUTE_CGROUPS").as_deref() != Ok("1") {
        lrun::test_support::skip("absolute cgroup paths are tested in the VM only");
        return;
    }
    let mut env = Env::new();
    let id = detached(&mut env, "abs", &["sleep", "1000"], |b| {
        b.config["linux"]["cgroupsPath"] = json!("/lrun-abs-test/c1");
        b.config["linux"]["resources"]["pids"] = json!({"limit": 33});
    });
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        cg.lines().any(|l| l.ends_with(":/lrun-abs-test/c1")),
        "{cg}"
    );
    let max = std::fs::read_to_string("/sys/fs/cgroup/lrun-abs-test/c1/pids.max")
        .or_else(|_| std::fs::read_to_string("/sys/fs/cgroup/pids/lrun-abs-test/c1/pids.max"))
        .unwrap();
    assert_eq!(max.trim(), "33");
    assert!(env.quiet(&["delete", "--force", &id]).0);
    assert!(!std::path::Path::new("/sys/fs/cgroup/lrun-abs-test/c1").exists());
    // The parent is created on demand and, as with runc, left in place: remove it.
    let _ = std::fs::remove_dir("/sys/fs/cgroup/lrun-abs-test");
}

/// Where a relative cgroupsPath `rel` lands in the hierarchy that freezes, with the file and
/// value that freeze it: the v1 freezer, else cgroup2 (pure v2 nests beside our own cgroup).
fn freezer_target(rel: &str) -> Option<(std::path::PathBuf, &'static str, &'static str)> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let v1 = std::path::Path::new("/sys/fs/cgroup/freezer");
    if v1.join("freezer.state").exists() || v1.join("cgroup.procs").exists() {
        let p = own.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, c, p) = (f.next()?, f.next()?, f.next()?);
            c.split(',')
                .any(|c| c == "freezer")
                .then(|| p.trim_start_matches('/').to_string())
        })?;
        return Some((v1.join(p).join(rel), "freezer.state", "FROZEN"));
    }
    let v2 = std::path::Path::new("/sys/fs/cgroup");
    if v2.join("cgroup.controllers").exists() {
        let p = own.lines().find_map(|l| l.strip_prefix("0::"))?;
        let parent = std::path::Path::new(p.trim_start_matches('/')).parent()?;
        return Some((v2.join(parent).join(rel), "cgroup.freeze", "1"));
    }
    None
}

/// runc refuses to start a container in a frozen cgroup ("container's cgroup unexpectedly
/// frozen"), at once, leaving the cgroup as it was; lrun used to hang in it.
#[test]
fn create_into_a_frozen_cgroup_is_refused_at_once() {
    let mut env = Env::new();
    let rel = format!("lrun-frozen-{}", std::process::id());
    let Some((dir, file, value)) = freezer_target(&format!("{rel}/c")) else {
        lrun::test_support::skip("no freezer (v1 freezer or cgroup2) here");
        return;
    };
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(file), value).unwrap();
    let top = dir.parent().unwrap().to_path_buf();
    for verb in ["run", "create"] {
        let id = env.id("frz");
        let mut b = env.bundle("frz", &["true"]);
        b.config["linux"]["cgroupsPath"] = json!(format!("{rel}/c"));
        b.write();
        let log = env.scratch.join("frz.err");
        let mut child = env
            .lrun()
            .args(if verb == "run" {
                vec!["run", "-d"]
            } else {
                vec!["create"]
            })
            .args(["--bundle", b.path(), &id])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let err = std::fs::read_to_string(&log).unwrap_or_default();
        let hung = status.is_none();
        if hung || status.unwrap().success() {
            // Thaw first so cleanup can end what started.
            let _ = std::fs::write(
                dir.join(file),
                if file == "cgroup.freeze" {
                    "0"
                } else {
                    "THAWED"
                },
            );
        }
        assert!(!hung, "lrun {verb} into a frozen cgroup hung");
        assert!(
            !status.unwrap().success(),
            "lrun {verb} into a frozen cgroup succeeded"
        );
        assert!(
            err.contains("container's cgroup unexpectedly frozen"),
            "{verb}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        // Nothing is left: no state, and the cgroup stays as it was.
        assert!(!env.out(&["state", &id]).status.success());
        assert!(dir.exists(), "the pre-existing cgroup was removed");
    }
    let _ = std::fs::write(
        dir.join(file),
        if file == "cgroup.freeze" {
            "0"
        } else {
            "THAWED"
        },
    );
    std::fs::remove_dir(&dir).unwrap();
    std::fs::remove_dir(&top).unwrap();
}

/// The v1 memory cgroup directory of a running container, from its init's /proc/PID/cgroup.
fn v1_memory_dir(env: &Env, id: &str) -> Option<std::path::PathBuf> {
    let pid = env.state(id)["pid"].as_i64()?;
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let p = cg.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, c, p) = (f.next()?, f.next()?, f.next()?);
        c.split(',').any(|c| c == "memory").then_some(p)
    })?;
    Some(std::path::Path::new("/sys/fs/cgroup/memory").join(p.trim_start_matches('/')))
}

/// v1 keeps memory.limit_in_bytes <= memory.memsw.limit_in_bytes at every write: `update
/// --memory -1` with a swap limit set lifts the swap limit too (as runc does), and raising or
/// lowering both orders the writes so that each one is valid.
#[test]
fn update_memory_unlimited_with_a_swap_limit() {
    let mut env = Env::new();
    let id = detached(&mut env, "memsw", &["sleep", "1000"], |b| {
        b.config["linux"]["resources"]["memory"] = json!({"limit": 100 << 20, "swap": 200 << 20});
    });
    let Some(dir) = v1_memory_dir(&env, &id).filter(|d| d.join("memory.limit_in_bytes").exists())
    else {
        lrun::test_support::skip("no v1 memory cgroup here");
        return;
    };
    if !dir.join("memory.memsw.limit_in_bytes").exists() {
        lrun::test_support::skip("the kernel has no swap accounting (no memory.memsw files)");
        return;
    }
    let read = |f: &str| -> u64 {
        std::fs::read_to_string(dir.join(f))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(read("memory.memsw.limit_in_bytes"), 200 << 20);
    let (ok, err) = env.quiet(&["update", "--memory", "-1", &id]);
    assert!(ok, "update --memory -1: {err}");
    assert!(read("memory.limit_in_bytes") > 1 << 60);
    assert!(read("memory.memsw.limit_in_bytes") > 1 << 60);
    // Down from unlimited, then up again: each in the order the kernel accepts.
    let (ok, err) = env.quiet(&["update", "--memory", "50M", "--memory-swap", "80M", &id]);
    assert!(ok, "lowering: {err}");
    assert_eq!(
        (
            read("memory.limit_in_bytes"),
            read("memory.memsw.limit_in_bytes")
        ),
        (50 << 20, 80 << 20)
    );
    let (ok, err) = env.quiet(&["update", "--memory", "300M", "--memory-swap", "400M", &id]);
    assert!(ok, "raising: {err}");
    assert_eq!(
        (
            read("memory.limit_in_bytes"),
            read("memory.memsw.limit_in_bytes")
        ),
        (300 << 20, 400 << 20)
    );
    assert!(env.quiet(&["delete", "--force", &id]).0);
}

/// Remove the directory `rel` (and what is below it) that a container with a relative
/// cgroupsPath left beneath our own cgroup in each v1 hierarchy and cgroup2 (hybrid layout):
/// lrun, as runc, leaves the parents of the container's cgroup in place.
fn remove_own_v1_cgroup_dirs(rel: &str) {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    for l in own.lines() {
        let mut f = l.splitn(3, ':');
        let (Some(_), Some(c), Some(p)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let mount = match c {
            "" => "unified".to_string(),
            c => c.strip_prefix("name=").unwrap_or(c).to_string(),
        };
        let top = std::path::Path::new("/sys/fs/cgroup")
            .join(mount)
            .join(p.trim_start_matches('/'))
            .join(rel);
        // Deepest first; only empty cgroups go (rmdir), nothing else is touched.
        let mut dirs: Vec<_> = walk_dirs(&top);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn walk_dirs(top: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if top.is_dir() {
        out.push(top.to_path_buf());
        for e in std::fs::read_dir(top).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(walk_dirs(&e.path()));
            }
        }
    }
    out
}

/// An existing parent cpuset cgroup with empty cpuset.cpus/cpuset.mems (someone made it and
/// did not fill it in) is filled from its nearest non-empty ancestor, as runc does, instead of
/// the container failing to join with ENOSPC.
#[test]
fn an_empty_existing_parent_cpuset_is_filled_in() {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let Some(own_cpuset) = own.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, c, p) = (f.next()?, f.next()?, f.next()?);
        c.split(',').any(|c| c == "cpuset").then_some(p)
    }) else {
        lrun::test_support::skip("no v1 cpuset hierarchy here");
        return;
    };
    let base =
        std::path::Path::new("/sys/fs/cgroup/cpuset").join(own_cpuset.trim_start_matches('/'));
    if !base.join("cpuset.cpus").exists() {
        lrun::test_support::skip("the v1 cpuset hierarchy is not at /sys/fs/cgroup/cpuset");
        return;
    }
    let rel = format!("lrun-cpuset-{}", std::process::id());
    let mid = base.join(&rel);
    std::fs::create_dir(&mid).unwrap();
    let empty = |f: &str| {
        std::fs::read_to_string(mid.join(f))
            .unwrap()
            .trim()
            .is_empty()
    };
    if !empty("cpuset.cpus") || !empty("cpuset.mems") {
        let _ = std::fs::remove_dir(&mid);
        lrun::test_support::skip("new cpusets are filled in here (cgroup.clone_children)");
        return;
    }
    let mut env = Env::new();
    let mut b = env.bundle("cpuset", &["true"]);
    b.config["linux"]["cgroupsPath"] = json!(format!("{rel}/c"));
    let (code, _, err) = run(&mut env, &b);
    let filled = !empty("cpuset.cpus") && !empty("cpuset.mems");
    remove_own_v1_cgroup_dirs(&rel);
    assert_eq!(code, 0, "run under an empty parent cpuset: {err}");
    assert!(filled, "the parent cpuset was not filled in");
    assert!(!mid.exists(), "cleanup left {}", mid.display());
}

/// A second container given the cgroup of a running one is refused, as runc 1.2+ does
/// ("container's cgroup is not empty"; runc 1.1 only warned, and its delete then killed both):
/// the refusal leaves no state and the first container keeps running.
#[test]
fn a_populated_cgroup_is_refused_and_its_processes_live_on() {
    let mut env = Env::new();
    let rel = format!("lrun-shared-{}", std::process::id());
    let first = detached(&mut env, "shared1", &["sleep", "1000"], |b| {
        b.config["linux"]["cgroupsPath"] = json!(rel);
    });
    for verb in ["run", "create"] {
        let id = env.id("shared2");
        let mut b = env.bundle("shared2", &["true"]);
        b.config["linux"]["cgroupsPath"] = json!(rel);
        b.write();
        let args: &[&str] = if verb == "run" {
            &["run", "-d"]
        } else {
            &["create"]
        };
        let (ok, err) = env.quiet(&[args, &["--bundle", b.path(), &id]].concat());
        assert!(!ok, "{verb} into a populated cgroup succeeded");
        assert!(
            err.contains("container's cgroup is not empty"),
            "{verb}: {err}"
        );
        assert!(
            !env.out(&["state", &id]).status.success(),
            "{verb} left state"
        );
        assert_eq!(
            env.status(&first),
            "running",
            "{verb} harmed the first container"
        );
    }
    assert!(env.quiet(&["delete", "--force", &first]).0);
}

/// runc refuses exec into a paused container unless told `--ignore-paused`; then the
/// process joins the frozen cgroup and runs once the container is resumed.
#[test]
fn exec_into_a_paused_container_needs_ignore_paused() {
    let mut env = Env::new();
    let id = detached(&mut env, "execpaused", &["sleep", "1000"], |_| {});
    assert!(env.quiet(&["pause", &id]).0);
    let out = env.out(&["exec", &id, "echo", "ok"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert!(
        err.contains("cannot exec in a paused container (use --ignore-paused to override)"),
        "{err}"
    );
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(500));
            assert!(env.quiet(&["resume", &id]).0);
        });
        env.out(&["exec", "--ignore-paused", &id, "echo", "ok"])
    });
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.status(&id), "running");
    assert!(env.quiet(&["delete", "--force", &id]).0);
}

/// Whether the host is cgroup v1, and process `pid`'s memory cgroup there (its only cgroup
/// on v2) as a host path.
fn memory_cgroup_of(pid: i64) -> (bool, String) {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let (v1, line) = match own.lines().find(|l| l.split(':').nth(1) == Some("memory")) {
        Some(l) => (true, l),
        None => (false, own.lines().find(|l| l.starts_with("0::")).unwrap()),
    };
    let rel = line.splitn(3, ':').nth(2).unwrap();
    let host = if v1 {
        format!("/sys/fs/cgroup/memory{rel}")
    } else {
        format!("/sys/fs/cgroup{rel}")
    };
    (v1, host)
}

/// runc's `exec --cgroup [CONTROLLER:]PATH` runs the process in an existing sub-cgroup of
/// the container's, and refuses one outside it, a missing one and an unknown controller.
#[test]
fn exec_cgroup_joins_a_sub_cgroup_of_the_container() {
    let mut env = Env::new();
    let id = detached(&mut env, "execcg", &["sleep", "1000"], |_| {});
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    let (v1, host) = memory_cgroup_of(pid);
    std::fs::create_dir(format!("{host}/sub")).unwrap();
    let flag = if v1 { "memory:sub" } else { "sub" };
    let want = if v1 { ":memory:" } else { "0::" };
    let in_sub = |out: &std::process::Output| {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let l = text.lines().find(|l| l.contains(want)).unwrap().to_string();
        l.ends_with("/sub")
    };
    let out = env.out(&["exec", "--cgroup", flag, &id, "cat", "/proc/self/cgroup"]);
    assert!(in_sub(&out), "{}", String::from_utf8_lossy(&out.stdout));
    for top in [&["exec", &id][..], &["exec", "--cgroup", "/", &id]] {
        let out = env.out(&[top, &["cat", "/proc/self/cgroup"]].concat());
        assert!(
            !in_sub(&out),
            "{top:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    for (arg, words) in [
        ("..", "bad sub cgroup path"),
        ("nonexistent", "o such file or directory"),
        ("whaaat:/", "unknown controller whaaat"),
    ] {
        let (ok, err) = env.quiet(&["exec", "--cgroup", arg, &id, "true"]);
        assert!(!ok && err.contains(words), "--cgroup {arg}: {err}");
    }
    let (_, err) = env.quiet(&["exec", "--cgroup", "nonexistent", &id, "true"]);
    assert!(err.contains("error adding pid"), "{err}");
    assert!(env.quiet(&["delete", "--force", &id]).0);
}

/// delete --force kills processes in cgroups nested below the container's and removes the
/// whole tree (removal tries rmdir first and reads directories only when it is refused).
#[test]
fn delete_removes_nested_cgroups_and_their_processes() {
    let mut env = Env::new();
    let id = detached(&mut env, "nestcg", &["sleep", "1000"], |_| {});
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    let (v1, host) = memory_cgroup_of(pid);
    std::fs::create_dir_all(format!("{host}/a/b")).unwrap();
    std::fs::create_dir(format!("{host}/c")).unwrap();
    let flag = if v1 { "memory:a/b" } else { "a/b" };
    let out = env.out(&[
        "exec",
        "--detach",
        "--cgroup",
        flag,
        &id,
        "sh",
        "-c",
        // Off the test's pipes, or reading the output would wait for the sleep.
        "exec sleep 1000 </dev/null >/dev/null 2>&1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deep = std::fs::read_to_string(format!("{host}/a/b/cgroup.procs")).unwrap();
    let deep_pid: i32 = deep.trim().parse().expect("one process in a/b");
    assert!(env.quiet(&["delete", "--force", &id]).0);
    assert!(
        !std::path::Path::new(&host).exists(),
        "{host} is left after delete --force"
    );
    let gone = (0..100).any(|_| {
        let dead = !std::path::Path::new(&format!("/proc/{deep_pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{deep_pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "));
        if !dead {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        dead
    });
    assert!(
        gone,
        "process {deep_pid} of a nested cgroup survived delete"
    );
}

#[test]
fn on_pure_cgroup_v2_the_init_is_born_in_its_cgroup() {
    let fs = nix::sys::statfs::statfs("/sys/fs/cgroup").unwrap();
    if fs.filesystem_type() != nix::sys::statfs::CGROUP2_SUPER_MAGIC {
        lrun::test_support::skip("clone3 into the cgroup is used on pure cgroup v2 only (VM)");
        return;
    }
    let mut env = Env::new();
    let b = env.bundle("born", &["sh", "-c", "cat /proc/self/cgroup"]);
    b.write();
    let id = env.id("born");
    let out = env.out(&["--debug", "run", "--bundle", b.path(), &id]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // clone3(CLONE_INTO_CGROUP) placed it: no cgroup.procs write was needed.
    assert!(err.contains("cgroups joined at clone"), "{err}");
    // And it is in its own cgroup (the cgroup namespace roots it at "/").
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0::/\n");
}

/// A limit the kernel refuses fails `create` after the container's first process exists
/// (on cgroup v1 the cgroups are made and set while it starts on its mounts): that process
/// is killed and waited for, the error is the one line about the limit, and no state,
/// cgroup or process is left.
#[test]
fn a_limit_the_kernel_refuses_fails_create_and_leaves_nothing() {
    let mut env = Env::new();
    let rel = format!("lrun-badlimit-{}", std::process::id());
    let id = env.id("badlimit");
    let mut b = env.bundle("badlimit", &["sleep", "1000"]);
    b.config["linux"]["cgroupsPath"] = json!(rel);
    b.config["linux"]["resources"] = json!({"cpu": {"cpus": "4095"}});
    b.write();
    let (ok, err) = env.quiet(&["create", "--bundle", b.path(), &id]);
    assert!(!ok, "create with cpus 4095 succeeded");
    assert!(err.contains("cpus"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!env.root.join(&id).exists(), "state left");
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    for line in own.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrls, path) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        let hier = match ctrls {
            "" => "/sys/fs/cgroup".to_string(),
            c => format!("/sys/fs/cgroup/{}", c.trim_start_matches("name=")),
        };
        let dir = std::path::Path::new(&hier)
            .join(path.trim_start_matches('/'))
            .join(&rel);
        assert!(!dir.exists(), "{} left", dir.display());
    }
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        assert!(
            !cmdline.contains(&id),
            "process {:?} left: {cmdline}",
            p.file_name()
        );
    }
}
