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

/// runc's `exec --cgroup [CONTROLLER:]PATH` runs the process in an existing sub-cgroup of
/// the container's, and refuses one outside it, a missing one and an unknown controller.
#[test]
fn exec_cgroup_joins_a_sub_cgroup_of_the_container() {
    let mut env = Env::new();
    let id = detached(&mut env, "execcg", &["sleep", "1000"], |_| {});
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    // The init's memory cgroup on v1, its only one on v2, seen from the host.
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
