//! What container engines match in a runtime's output (runtime-spec/engines.md): runc's error
//! phrases, its exit statuses, and its JSON log line. Each test names the engine behaviour it
//! protects.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Run lrun; (exit code, stderr), stdio detached.
fn code_err(env: &Env, args: &[&str]) -> (i32, String) {
    env.quiet_code(args)
}

fn wait_stopped(env: &Env, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.status(id) != "stopped" {
        assert!(Instant::now() < deadline, "{id} did not stop");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A container whose process has exited, not yet deleted.
fn stopped(env: &mut Env, b: &Bundle) -> String {
    b.write();
    let id = env.id("stopped");
    assert_eq!(code_err(env, &["create", "--bundle", b.path(), &id]).0, 0);
    assert_eq!(code_err(env, &["start", &id]).0, 0);
    wait_stopped(env, &id);
    id
}

fn running(env: &mut Env) -> String {
    let id = env.id("running");
    let b = env.bundle("running", &["sleep", "1000"]);
    b.write();
    let (code, err) = code_err(env, &["run", "-d", "--bundle", b.path(), &id]);
    assert_eq!(code, 0, "{err}");
    id
}

fn without_pid_namespace(b: &mut Bundle) {
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "pid");
}

fn pids(env: &Env, id: &str) -> Vec<i64> {
    let out = ok(&env.out(&["ps", "--format", "json", id]));
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_i64().unwrap())
        .collect()
}

// containerd's shim (checkKillError, C4), CRI-O and podman <= 5.2 (P11) match "does not exist".
#[test]
fn a_missing_container_does_not_exist_for_every_command() {
    let env = Env::new();
    for args in [
        &["kill", "no-such", "9"][..],
        &["kill", "--all", "no-such", "9"],
        &["delete", "no-such"],
        &["state", "no-such"],
        &["start", "no-such"],
    ] {
        let (code, err) = code_err(&env, args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains("container does not exist"), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    // runc: exec failures exit 255.
    let (code, err) = code_err(&env, &["exec", "no-such", "true"]);
    assert_eq!(code, 255, "{err}");
    assert!(err.contains("container does not exist"), "{err}");
}

// containerd's shim cleanup (C11), podman rm (P10) and CRI-O (O4) delete --force a container
// that may be gone already.
#[test]
fn delete_force_of_a_missing_container_succeeds_silently() {
    let env = Env::new();
    let (code, err) = code_err(&env, &["delete", "--force", "no-such"]);
    assert_eq!((code, err.as_str()), (0, ""));
}

// containerd's shim sends `kill --all ID 9` after every exit and takes only runc's words
// ("container not running") for "already gone" (C1, C8); the spec wants kill of a stopped
// container to fail, which runc's plain kill does.
#[test]
fn kill_of_a_stopped_container_says_container_not_running() {
    let mut env = Env::new();
    let b = env.bundle("k", &["true"]);
    let id = stopped(&mut env, &b);
    for sig in ["9", "15", "KILL"] {
        let (code, err) = code_err(&env, &["kill", &id, sig]);
        assert_eq!(code, 1, "kill {sig}: {err}");
        assert!(err.contains("container not running"), "kill {sig}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    for (flag, sig) in [("--all", "9"), ("--all", "15"), ("-a", "KILL")] {
        let (code, err) = code_err(&env, &["kill", flag, &id, sig]);
        assert_eq!((code, err.as_str()), (0, ""), "kill {flag} {sig}");
    }
    assert_eq!(env.status(&id), "stopped");
    assert_eq!(code_err(&env, &["delete", &id]).0, 0);
}

// Without a pid namespace of its own, a container's processes outlive its init: runc's
// `kill --all` and its SIGKILL of the stopped container reach them through the cgroup.
#[test]
fn kill_reaches_what_a_stopped_container_left_in_its_cgroup() {
    let mut env = Env::new();
    for args in [&["kill"][..], &["kill", "--all"]] {
        let mut b = env.bundle("left", &["sh", "-c", "sleep 1000 & exit 0"]);
        without_pid_namespace(&mut b);
        let id = stopped(&mut env, &b);
        assert_eq!(pids(&env, &id).len(), 1, "the sleep is left behind");
        let mut argv = args.to_vec();
        argv.extend([id.as_str(), "9"]);
        let (code, err) = code_err(&env, &argv);
        assert_eq!((code, err.as_str()), (0, ""), "{argv:?}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pids(&env, &id).is_empty() {
            assert!(Instant::now() < deadline, "{argv:?}: the leftover survives");
            std::thread::sleep(Duration::from_millis(10));
        }
        // SIGTERM is not extended to leftovers: the spec's error.
        let (code, err) = code_err(&env, &["kill", &id, "15"]);
        assert!(code == 1 && err.contains("container not running"), "{err}");
        assert_eq!(code_err(&env, &["delete", &id]).0, 0);
    }
}

// runc's `kill ID 0` (kill(2)'s null signal) tests liveness: it succeeds and sends nothing
// for a created or running container, and fails as any plain kill does for a stopped one.
#[test]
fn kill_with_signal_0_tests_liveness() {
    let mut env = Env::new();
    let b = env.bundle("zero", &["sleep", "1000"]);
    b.write();
    let created = env.id("created");
    assert_eq!(
        code_err(&env, &["create", "--bundle", b.path(), &created]).0,
        0
    );
    let running = running(&mut env);
    for id in [&created, &running] {
        let status = env.status(id);
        for argv in [&["kill", id, "0"][..], &["kill", "--all", id, "0"]] {
            let (code, err) = code_err(&env, argv);
            assert_eq!((code, err.as_str()), (0, ""), "{argv:?} ({status})");
        }
        assert_eq!(env.status(id), status, "signal 0 changed nothing");
    }
    assert_eq!(code_err(&env, &["kill", &running, "KILL"]).0, 0);
    wait_stopped(&env, &running);
    let (code, err) = code_err(&env, &["kill", &running, "0"]);
    assert!(code == 1 && err.contains("container not running"), "{err}");
    assert_eq!(code_err(&env, &["delete", &running]).0, 0);
    assert_eq!(code_err(&env, &["delete", "--force", &created]).0, 0);
}

#[test]
fn kill_and_delete_of_a_running_container() {
    let mut env = Env::new();
    let id = running(&mut env);
    let (code, err) = code_err(&env, &["delete", &id]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not stopped"), "{err}");
    assert!(!err.contains("does not exist"), "{err}");
    let (code, err) = code_err(&env, &["kill", "--all", &id, "KILL"]);
    assert_eq!((code, err.as_str()), (0, ""));
    wait_stopped(&env, &id);
    assert_eq!(code_err(&env, &["delete", &id]).0, 0);
    // containerd's plain delete of a container already gone (C5).
    let (code, err) = code_err(&env, &["delete", &id]);
    assert!(code == 1 && err.contains("does not exist"), "{err}");
}

/// The programs engines map to 127/126 and runc's (Go's) words for them.
const BAD_PROGRAMS: [(&str, &str); 5] = [
    (
        "/nonexistent",
        "exec: \"/nonexistent\": stat /nonexistent: no such file or directory",
    ),
    (
        "nonexistentcmd",
        "exec: \"nonexistentcmd\": executable file not found in $PATH",
    ),
    ("/etc/passwd", "exec: \"/etc/passwd\": permission denied"),
    ("/etc", "exec: \"/etc\": is a directory"),
    (
        "/etc/passwd/x",
        "exec: \"/etc/passwd/x\": stat /etc/passwd/x: not a directory",
    ),
];

// docker (daemon/errors.go, cli run.go), podman (exec_codes.go) and containerd turn these
// words from `create` into 127/126; they must come from create, not start (P5).
#[test]
fn a_bad_program_fails_create_with_runcs_words() {
    let mut env = Env::new();
    for (arg0, words) in BAD_PROGRAMS {
        let b = env.bundle("bad", &[arg0]);
        b.write();
        let id = env.id("bad");
        let pid_file = env.scratch.join("create.pid");
        let (code, err) = code_err(
            &env,
            &[
                "create",
                "--bundle",
                b.path(),
                "--pid-file",
                pid_file.to_str().unwrap(),
                &id,
            ],
        );
        assert_eq!(code, 1, "{arg0}: {err}");
        assert!(err.contains(words), "{arg0}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!pid_file.exists(), "{arg0}: pid file written");
        assert!(!env.root.join(&id).exists(), "{arg0}: state left");
        // Then containerd's delete finds nothing (C5).
        let (code, err) = code_err(&env, &["delete", &id]);
        assert!(code == 1 && err.contains("does not exist"), "{err}");
    }
}

// runc's exec fails with exit 255 (containerd, conmon and CRI-O take that as an exec
// failure); the words map to 127/126 as for create. No --pid-file on failure: conmon takes
// its absence as the failure (K2). A process that runs keeps its own exit status.
#[test]
fn a_bad_program_fails_exec_with_255_and_runcs_words() {
    let mut env = Env::new();
    let id = running(&mut env);
    let pid_file = env.scratch.join("exec.pid");
    let pid_arg = pid_file.to_str().unwrap().to_string();
    for (arg0, words) in BAD_PROGRAMS {
        for detach in [false, true] {
            let mut argv = vec!["exec", "--pid-file", &pid_arg];
            if detach {
                argv.push("--detach");
            }
            argv.extend([id.as_str(), arg0]);
            let (code, err) = code_err(&env, &argv);
            assert_eq!(code, 255, "{argv:?}: {err}");
            assert!(err.contains(words), "{argv:?}: {err}");
            assert!(!pid_file.exists(), "{argv:?}: pid file written");
        }
    }
    let (code, err) = code_err(&env, &["exec", &id, "sh", "-c", "exit 3"]);
    assert_eq!(code, 3, "{err}");
    let (code, err) = code_err(&env, &["exec", &id, "sh", "-c", "exit 255"]);
    assert_eq!(code, 255, "{err}");
    assert_eq!(code_err(&env, &["delete", "--force", &id]).0, 0);
    // Exec into a stopped container: 255 too.
    let b = env.bundle("st", &["true"]);
    let id = stopped(&mut env, &b);
    let (code, err) = code_err(&env, &["exec", &id, "true"]);
    assert_eq!(code, 255, "{err}");
    assert!(err.contains("cannot exec in a stopped container"), "{err}");
    assert_eq!(code_err(&env, &["delete", &id]).0, 0);
}

/// Go's time.Time accepts RFC 3339 only: YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM).
fn is_rfc3339(t: &str) -> bool {
    let b = t.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    if b.len() < 20
        || !(digits(0..4) && digits(5..7) && digits(8..10) && digits(11..13))
        || !(digits(14..16) && digits(17..19))
        || (b[4], b[7], b[10], b[13], b[16]) != (b'-', b'-', b'T', b':', b':')
    {
        return false;
    }
    let mut rest = &t[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    rest == "Z" || (rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')))
}

// containerd's shim decodes the whole --log file as JSON objects and keeps the last
// level=="error" msg (getLastRuntimeError, C6): one non-JSON line or a bad time loses it.
// podman (runtimes it knows) wants exactly one object for a failed create (P1).
#[test]
fn log_format_json_writes_one_error_object_per_failure() {
    let mut env = Env::new();
    let log = env.scratch.join("log.json");
    let log_arg = log.to_str().unwrap().to_string();
    let b = env.bundle("logged", &["/nonexistent"]);
    b.write();
    let id = env.id("logged");
    let base = ["--log", &log_arg, "--log-format", "json"];
    let (code, err) = code_err(
        &env,
        &[&base[..], &["create", "--bundle", b.path(), &id]].concat(),
    );
    assert_eq!(code, 1);
    // Errors still reach stderr, where conmon reads them (K1).
    assert!(err.contains("no such file or directory"), "{err}");
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let entry: Value = serde_json::from_str(text.trim()).unwrap();
    let obj = entry.as_object().unwrap();
    assert_eq!(obj.len(), 3, "{text}");
    assert_eq!(entry["level"], json!("error"));
    let msg = entry["msg"].as_str().unwrap();
    assert!(
        msg.contains("exec: \"/nonexistent\": stat /nonexistent: no such file or directory"),
        "{msg}"
    );
    assert!(is_rfc3339(entry["time"].as_str().unwrap()), "{text}");
    assert_eq!(
        fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o644
    );
    // Appended to, never truncated: the shim reads the last error.
    let (code, _) = code_err(&env, &[&base[..], &["kill", "no-such", "9"]].concat());
    assert_eq!(code, 1);
    let text = fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[1]["msg"]
            .as_str()
            .unwrap()
            .contains("container does not exist")
    );
    // A command that succeeds writes nothing.
    let (code, _) = code_err(
        &env,
        &[&base[..], &["delete", "--force", "no-such"]].concat(),
    );
    assert_eq!(code, 0);
    assert_eq!(fs::read_to_string(&log).unwrap(), text);
}

#[test]
fn rfc3339_check_itself() {
    assert!(is_rfc3339("2026-12-07T19:18:43Z"));
    assert!(is_rfc3339("2026-12-07T19:18:43.140151138Z"));
    assert!(is_rfc3339("2026-12-07T19:18:43+01:00"));
    assert!(!is_rfc3339("2026-12-07 19:18:43Z"));
    assert!(!is_rfc3339("1765135123"));
}

// R3: an execve that fails after create succeeded (ENOEXEC here) fails `start` with runc's
// words (issue 14: runc's `start` returns 0 and the container exits 255; lrun's `start` reports
// it, exit 1, and the container is stopped); an exec'd process's, after `exec` reported it
// started, is its own failure: runc's words on its stderr, exit 255.
#[test]
fn a_late_exec_failure_exits_255_with_runcs_words() {
    let mut env = Env::new();
    let dir = env.scratch.join("late");
    fs::create_dir_all(&dir).unwrap();
    let prog = dir.join("garbage");
    fs::write(&prog, b"\x00\x01\x02\x03 not a program\n").unwrap();
    fs::set_permissions(&prog, fs::Permissions::from_mode(0o755)).unwrap();
    let mut b = env.bundle("late", &["/mnt/garbage"]);
    b.config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/mnt", "type": "bind", "source": dir, "options": ["bind", "ro"]
    }));
    b.write();
    let id = env.id("late");
    let (code, err) = code_err(&env, &["create", "--bundle", b.path(), &id]);
    assert_eq!(code, 0, "{err}");
    let (code, err) = code_err(&env, &["start", &id]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("exec /mnt/garbage: exec format error"),
        "{err}"
    );
    assert_eq!(env.status(&id), "stopped");
    assert_eq!(code_err(&env, &["delete", &id]).0, 0);
    // An exec'd process: `lrun exec` returns its status.
    let mut b = env.bundle("late2", &["sleep", "1000"]);
    b.config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/mnt", "type": "bind", "source": dir, "options": ["bind", "ro"]
    }));
    b.write();
    let id = env.id("late2");
    let (code, err) = code_err(&env, &["run", "-d", "--bundle", b.path(), &id]);
    assert_eq!(code, 0, "{err}");
    let (code, err) = code_err(&env, &["exec", &id, "/mnt/garbage"]);
    assert_eq!(code, 255, "{err}");
    assert!(
        err.contains("exec /mnt/garbage: exec format error"),
        "{err}"
    );
    assert_eq!(code_err(&env, &["delete", "--force", &id]).0, 0);
}

// runc creates /dev/core only where the host has /proc/kcore (CONFIG_PROC_KCORE).
#[test]
fn dev_core_exists_only_with_proc_kcore() {
    let mut env = Env::new();
    let out = sh(
        &mut env,
        |_| {},
        "if [ -L /dev/core ]; then echo link; else echo none; fi",
    );
    let want = if std::path::Path::new("/proc/kcore").exists() {
        "link"
    } else {
        "none"
    };
    assert_eq!(out.trim(), want);
}
