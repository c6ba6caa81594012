//! The OCI lifecycle on plain bundles: create, start, state, kill, delete, run, list.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::*;

fn wait_status(env: &Env, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.status(id) != want {
        assert!(Instant::now() < deadline, "{id} never became {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn run_returns_the_exit_code_and_output() {
    let mut env = Env::new();
    let b = env.bundle("exit", &["sh", "-c", "echo hello; exit 7"]);
    let (code, out, _) = run(&mut env, &b);
    assert_eq!(code, 7);
    assert_eq!(out, "hello\n");
}

#[test]
fn create_start_kill_delete_walks_through_every_status() {
    let mut env = Env::new();
    let id = env.id("life");
    let b = env.bundle("life", &["sleep", "1000"]);
    b.write();
    let pid_file = env.scratch.join("pid");
    let (ok, err) = env.quiet(&[
        "create",
        "--bundle",
        b.path(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
    ]);
    assert!(ok, "create: {err}");
    let st = env.state(&id);
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], id.as_str());
    assert_eq!(st["bundle"], b.path());
    let pid = st["pid"].as_i64().unwrap();
    assert!(pid > 0);
    assert_eq!(fs::read_to_string(&pid_file).unwrap(), pid.to_string());
    // The process exists but has not exec'd the user program yet.
    let cmdline = fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        !cmdline.contains("sleep"),
        "user program ran before start: {cmdline}"
    );

    let (ok, err) = env.quiet(&["start", &id]);
    assert!(ok, "start: {err}");
    assert_eq!(env.status(&id), "running");
    wait_for(|| {
        fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .contains("sleep")
    });

    let (ok, err) = env.quiet(&["start", &id]);
    assert!(
        !ok && err.contains("running"),
        "second start must fail: {err}"
    );
    let (ok, err) = env.quiet(&["delete", &id]);
    assert!(
        !ok && err.contains("--force"),
        "delete of a running container must fail: {err}"
    );

    let (ok, err) = env.quiet(&["kill", &id, "KILL"]);
    assert!(ok, "kill: {err}");
    wait_status(&env, &id, "stopped");
    assert_eq!(env.state(&id)["pid"], 0);
    let (ok, err) = env.quiet(&["delete", &id]);
    assert!(ok, "delete: {err}");
    let (ok, err) = env.quiet(&["state", &id]);
    assert!(!ok && err.contains("does not exist"), "{err}");
}

fn wait_for(f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "condition never met");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn status_is_stopped_after_the_process_exits_on_its_own() {
    let mut env = Env::new();
    let id = env.id("exits");
    let b = env.bundle("exits", &["true"]);
    b.write();
    assert!(env.quiet(&["create", "--bundle", b.path(), &id]).0);
    assert!(env.quiet(&["start", &id]).0);
    wait_status(&env, &id, "stopped");
    assert!(env.quiet(&["delete", &id]).0);
}

#[test]
fn run_reports_128_plus_signal_when_the_container_is_killed() {
    let mut env = Env::new();
    let id = env.id("sig");
    let b = env.bundle("sig", &["sleep", "1000"]);
    b.write();
    let mut child = env
        .lrun()
        .args(["run", "--bundle", b.path(), &id])
        .spawn()
        .unwrap();
    wait_for(|| env.out(&["state", &id]).status.success() && env.status(&id) == "running");
    assert!(env.quiet(&["kill", &id, "9"]).0);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 9));
    // run deletes the container when it ends.
    assert!(!env.root.join(&id).exists());
}

#[test]
fn run_forwards_sigterm_to_the_container() {
    let mut env = Env::new();
    let id = env.id("fwd");
    let b = env.bundle(
        "fwd",
        &[
            "sh",
            "-c",
            "trap 'exit 42' TERM; echo ready; while true; do sleep 0.05; done",
        ],
    );
    b.write();
    let mut child = env
        .lrun()
        .args(["run", "--bundle", b.path(), &id])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "ready\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(42));
}

#[test]
fn run_detach_returns_with_the_container_running() {
    let mut env = Env::new();
    let id = env.id("det");
    let b = env.bundle("det", &["sleep", "1000"]);
    b.write();
    let (ok, err) = env.quiet(&["run", "-d", "--bundle", b.path(), &id]);
    assert!(ok, "{err}");
    assert_eq!(env.status(&id), "running");
    let (ok, err) = env.quiet(&["delete", "--force", &id]);
    assert!(ok, "{err}");
    assert!(!env.root.join(&id).exists());
}

#[test]
fn list_shows_containers_as_table_and_json() {
    let mut env = Env::new();
    let id = env.id("ls");
    let b = env.bundle("ls", &["sleep", "1000"]);
    b.write();
    assert!(env.quiet(&["create", "--bundle", b.path(), &id]).0);
    let table = String::from_utf8(env.out(&["list"]).stdout).unwrap();
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("created")),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&env.out(&["list", "--format", "json"]).stdout).unwrap();
    assert_eq!(json[0]["id"], id.as_str());
    assert_eq!(json[0]["status"], "created");
    assert!(
        env.quiet(&["delete", &id]).0,
        "a created container can be deleted without --force"
    );
}

#[test]
fn annotations_are_kept_in_state() {
    let mut env = Env::new();
    let id = env.id("ann");
    let mut b = env.bundle("ann", &["sleep", "1000"]);
    b.config["annotations"] = serde_json::json!({"org.example.key": "value"});
    b.write();
    assert!(env.quiet(&["create", "--bundle", b.path(), &id]).0);
    assert_eq!(env.state(&id)["annotations"]["org.example.key"], "value");
    assert!(env.quiet(&["delete", "--force", &id]).0);
}

#[test]
fn spec_writes_a_config_and_refuses_to_overwrite() {
    let env = Env::new();
    let dir = env.scratch.join("spec");
    fs::create_dir_all(&dir).unwrap();
    assert!(
        env.out(&["spec", "--bundle", dir.to_str().unwrap()])
            .status
            .success()
    );
    let cfg: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["root"]["path"], "rootfs");
    let again = env.out(&["spec", "--bundle", dir.to_str().unwrap()]);
    assert!(!again.status.success());
}

#[test]
fn features_lists_namespaces_and_hooks() {
    let env = Env::new();
    let out = env.out(&["features"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ociVersionMin"], "1.0.0");
    let ns = doc["linux"]["namespaces"].as_array().unwrap();
    assert!(ns.iter().any(|n| n == "time"));
    assert_eq!(doc["hooks"].as_array().unwrap().len(), 6);
    // features-linux.md: what the runtime supports, whatever the host's kernel has.
    assert_eq!(doc["linux"]["apparmor"]["enabled"], true);
    assert_eq!(doc["linux"]["selinux"]["enabled"], true);
    assert_eq!(doc["linux"]["cgroup"]["rdma"], true);
    assert_eq!(doc["linux"]["mountExtensions"]["idmap"]["enabled"], false);
    let opts = doc["mountOptions"].as_array().unwrap();
    assert!(opts.iter().any(|o| o == "rro") && opts.iter().any(|o| o == "nosymfollow"));
}

/// Start `lrun create` held in the middle by a slow createRuntime hook, then SIGKILL it.
fn kill_create_midway(env: &mut Env, name: &str) -> String {
    let id = env.id(name);
    let mut b = env.bundle(name, &["true"]);
    let marker = env.scratch.join(format!("{name}-hook-started"));
    b.config["hooks"] = serde_json::json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", format!("touch {}; sleep 30", marker.display())]}]});
    b.write();
    let mut child = env
        .lrun()
        .args(["create", "--bundle", b.path(), &id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(|| marker.exists());
    child.kill().unwrap();
    child.wait().unwrap();
    id
}

#[test]
fn delete_force_cleans_up_after_a_killed_create() {
    let mut env = Env::new();
    let id = kill_create_midway(&mut env, "crash");
    let (ok, err) = env.quiet(&["delete", "--force", &id]);
    assert!(ok, "{err}");
    assert!(!env.root.join(&id).exists());
}

#[test]
fn gc_removes_what_a_killed_create_left_and_keeps_live_containers() {
    let mut env = Env::new();
    let live = env.id("live");
    let b = env.bundle("live", &["sleep", "1000"]);
    b.write();
    assert!(env.quiet(&["run", "-d", "--bundle", b.path(), &live]).0);

    let crashed = kill_create_midway(&mut env, "crashed");

    let out = env.out(&["gc"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("removed {crashed}\n")
    );
    assert!(!env.root.join(&crashed).exists());
    assert_eq!(env.status(&live), "running");
    assert!(env.quiet(&["kill", &live, "KILL"]).0);
    wait_status(&env, &live, "stopped");
    let out = env.out(&["gc", "--stopped"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("removed {live}\n")
    );
}

/// A bundle on a writable copy of the busybox rootfs whose program is a script, `/bin/gone`,
/// that a startContainer hook (run in the container after `start`) removes: create finds it,
/// execve after start does not.
fn bundle_whose_program_goes_at_start(env: &Env, name: &str) -> (Bundle, std::path::PathBuf) {
    let root = env.scratch.join(format!("{name}-rootfs"));
    make_busybox_rootfs(&root);
    fs::write(root.join("bin/gone"), "#!/bin/sh\necho ran\n").unwrap();
    let mut perms = fs::metadata(root.join("bin/gone")).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    fs::set_permissions(root.join("bin/gone"), perms).unwrap();
    let marker = env.scratch.join(format!("{name}-poststart-ran"));
    let mut b = env.bundle(name, &["/bin/gone"]);
    b.config["root"] = serde_json::json!({"path": root, "readonly": false});
    b.config["hooks"] = serde_json::json!({
        "startContainer": [{"path": "/bin/rm", "args": ["rm", "/bin/gone"]}],
        "poststart": [{"path": "/bin/sh", "args": ["sh", "-c", format!("touch {}", marker.display())]}],
    });
    b.write();
    (b, marker)
}

/// Issue 14 item 1: a step after `start` that fails (here execve: the program is gone) makes
/// `start` fail with runc's words for it; the container ends up stopped and no poststart hook
/// runs. It used to count any close of the exec fifo as a start.
#[test]
fn a_program_gone_at_start_fails_start_and_stops_the_container() {
    let mut env = Env::new();
    let (b, poststart_ran) = bundle_whose_program_goes_at_start(&env, "gone");
    let id = env.id("gone");
    let (ok, err) = env.quiet(&["create", "--bundle", b.path(), &id]);
    assert!(ok, "create: {err}");
    let (code, err) = env.quiet_code(&["start", &id]);
    assert_eq!(code, 1, "start: {err}");
    assert!(
        err.contains("exec /bin/gone: no such file or directory"),
        "{err}"
    );
    assert_eq!(env.status(&id), "stopped");
    assert!(!poststart_ran.exists(), "a poststart hook ran");
    let (ok, err) = env.quiet(&["delete", &id]);
    assert!(ok, "delete: {err}");
}

/// The same failure under `run`: as runc's, whose init exits 255 after start, `run` exits 255
/// with the error on stderr, and the container is gone. `run -d` fails like `start`.
#[test]
fn a_program_gone_at_start_makes_run_exit_255() {
    let mut env = Env::new();
    let (b, poststart_ran) = bundle_whose_program_goes_at_start(&env, "gonerun");
    let (code, out, err) = run(&mut env, &b);
    assert_eq!(code, 255, "stdout: {out} stderr: {err}");
    assert!(
        err.contains("exec /bin/gone: no such file or directory"),
        "{err}"
    );
    assert!(!poststart_ran.exists(), "a poststart hook ran");

    let (b, poststart_ran) = bundle_whose_program_goes_at_start(&env, "gonerund");
    let id = env.id("gonerund");
    let (code, err) = env.quiet_code(&["run", "-d", "--bundle", b.path(), &id]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("exec /bin/gone: no such file or directory"),
        "{err}"
    );
    assert!(!poststart_ran.exists(), "a poststart hook ran");
    assert!(!env.root.join(&id).exists(), "run -d left its container");
}

/// A failing startContainer hook fails `start` with the hook's name; the container stops.
#[test]
fn a_failing_start_container_hook_fails_start() {
    let mut env = Env::new();
    let mut b = env.bundle("hookfail", &["sleep", "100"]);
    b.config["hooks"] = serde_json::json!({
        "startContainer": [{"path": "/bin/false", "args": ["false"]}],
    });
    b.write();
    let id = env.id("hookfail");
    let (ok, err) = env.quiet(&["create", "--bundle", b.path(), &id]);
    assert!(ok, "create: {err}");
    let (code, err) = env.quiet_code(&["start", &id]);
    assert_eq!(code, 1, "start: {err}");
    assert!(
        err.contains("hooks.startContainer[0] (/bin/false)"),
        "{err}"
    );
    assert_eq!(env.status(&id), "stopped");
}

/// Our mount points at or below `dir` (other tests and processes change the rest meanwhile;
/// the test's own state and scratch directories are checked by `Env`'s leak check).
fn mounts_below(dir: &std::path::Path) -> Vec<String> {
    let dir = fs::canonicalize(dir).unwrap();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| std::path::Path::new(p).starts_with(&dir))
        .map(str::to_string)
        .collect()
}

/// Issue 14 item 4: without a mount namespace the container shares the caller's (its init's
/// /proc/PID/ns/mnt is ours), runs chrooted in its rootfs, and lrun mounts nothing: the
/// mount table is the same before create and after delete.
#[test]
fn without_a_mount_namespace_the_container_shares_ours_and_leaves_no_mount() {
    let mut env = Env::new();
    let mut b = env.bundle("nomntns", &["sleep", "100"]);
    let ns = b.config["linux"]["namespaces"].as_array_mut().unwrap();
    ns.retain(|n| n["type"] != "mount");
    b.config["mounts"] = serde_json::json!([]);
    b.config["linux"]["maskedPaths"] = serde_json::json!([]);
    b.config["linux"]["readonlyPaths"] = serde_json::json!([]);
    b.config["root"]["readonly"] = serde_json::json!(false);
    b.write();
    let before = mounts_below(rootfs());
    let id = env.id("nomntns");
    let (ok, err) = env.quiet(&["run", "-d", "--bundle", b.path(), &id]);
    assert!(ok, "run -d: {err}");
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap(),
        fs::read_link("/proc/self/ns/mnt").unwrap(),
        "the container has a mount namespace of its own"
    );
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/root")).unwrap(),
        fs::canonicalize(rootfs()).unwrap()
    );
    // Its view of the mount table is ours (seen from inside its root).
    let theirs = fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let ours = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let ids = |t: &str| -> Vec<String> {
        t.lines()
            .map(|l| l.split(' ').next().unwrap_or("").to_string())
            .collect()
    };
    assert!(
        ids(&theirs).iter().all(|m| ids(&ours).contains(m)),
        "a mount of its own: {theirs}"
    );
    let out = env.out(&["exec", &id, "ls", "/bin/busybox"]);
    assert!(out.status.success(), "exec in a chrooted container");
    let (ok, err) = env.quiet(&["delete", "--force", &id]);
    assert!(ok, "delete: {err}");
    assert_eq!(mounts_below(rootfs()), before, "mounts changed");
}

/// What cannot be done without a mount of its own is refused at create, one line naming the
/// field, and nothing is left (no state, no mount).
#[test]
fn without_a_mount_namespace_what_needs_a_mount_is_refused() {
    let mut env = Env::new();
    let before = mounts_below(rootfs());
    for (field, value, words) in [
        ("mounts", None, "field mounts:"),
        (
            "maskedPaths",
            Some(serde_json::json!(["/proc/kcore"])),
            "field linux.maskedPaths:",
        ),
        (
            "readonlyPaths",
            Some(serde_json::json!(["/proc/sys"])),
            "field linux.readonlyPaths:",
        ),
        (
            "rootfsPropagation",
            Some(serde_json::json!("private")),
            "field linux.rootfsPropagation:",
        ),
        ("root.readonly", None, "field root.readonly:"),
    ] {
        let mut b = env.bundle("nomntbad", &["true"]);
        b.config["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "mount");
        if field != "mounts" {
            b.config["mounts"] = serde_json::json!([]);
            b.config["linux"]["maskedPaths"] = serde_json::json!([]);
            b.config["linux"]["readonlyPaths"] = serde_json::json!([]);
            b.config["root"]["readonly"] = serde_json::json!(false);
        }
        if let Some(v) = value {
            b.config["linux"][field] = v;
        }
        if field == "root.readonly" {
            b.config["root"]["readonly"] = serde_json::json!(true);
        }
        b.write();
        let id = env.id("nomntbad");
        let (ok, err) = env.quiet(&["create", "--bundle", b.path(), &id]);
        assert!(!ok, "{field}: create succeeded");
        assert!(err.contains(words), "{field}: {err}");
        assert!(err.contains("mount namespace"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!env.root.join(&id).exists(), "state left");
    }
    assert_eq!(mounts_below(rootfs()), before, "mounts changed");
}

/// A failed create of a container without a mount namespace (the program is missing, found
/// after the chroot) leaves nothing behind either.
#[test]
fn without_a_mount_namespace_a_failed_create_leaves_nothing() {
    let mut env = Env::new();
    let mut b = env.bundle("nomntfail", &["/no/such/program"]);
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "mount");
    b.config["mounts"] = serde_json::json!([]);
    b.config["linux"]["maskedPaths"] = serde_json::json!([]);
    b.config["linux"]["readonlyPaths"] = serde_json::json!([]);
    b.config["root"]["readonly"] = serde_json::json!(false);
    b.write();
    let before = mounts_below(rootfs());
    let id = env.id("nomntfail");
    let (ok, err) = env.quiet(&["create", "--bundle", b.path(), &id]);
    assert!(!ok);
    assert!(err.contains("no such file or directory"), "{err}");
    assert!(!env.root.join(&id).exists(), "state left");
    assert_eq!(mounts_below(rootfs()), before);
}

/// Issue 14 item 7: `--debug` traces each step of a successful create, start and delete, on
/// stderr, or in the `--log` file (JSON lines with `--log-format json`, as runc's).
#[test]
fn debug_traces_every_step_of_a_successful_lifecycle() {
    let mut env = Env::new();
    let b = env.bundle("debug", &["true"]);
    b.write();
    let id = env.id("debug");
    let (ok, err) = env.quiet(&["--debug", "create", "--bundle", b.path(), &id]);
    assert!(ok, "{err}");
    for step in [
        "checked",
        "claimed",
        "cgroups created",
        "cloned",
        "ready",
        "recorded as created",
    ] {
        assert!(err.contains(&format!("debug: create {id}: ")), "{err}");
        assert!(err.contains(step), "no {step:?} step in {err}");
    }
    let log = env.scratch.join("debug.log");
    let logs = log.to_str().unwrap();
    let args = ["--debug", "--log", logs, "--log-format", "json"];
    let (ok, err) = env.quiet(&[&args[..], &["start", &id]].concat());
    assert!(ok, "{err}");
    assert!(err.is_empty(), "debug lines went to stderr too: {err}");
    wait_status(&env, &id, "stopped");
    let (ok, err) = env.quiet(&[&args[..], &["delete", &id]].concat());
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let msgs: Vec<&str> = lines.iter().map(|l| l["msg"].as_str().unwrap()).collect();
    assert!(lines.iter().all(|l| l["level"] == "debug"), "{lines:?}");
    assert!(
        msgs.iter().any(|m| m.contains("released the init")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter().any(|m| m.contains("executed the program")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter().any(|m| m.contains("cgroups destroyed")),
        "{msgs:?}"
    );
    // Without --debug, nothing.
    let b = env.bundle("quiet", &["true"]);
    let (code, _, err) = run(&mut env, &b);
    assert_eq!((code, err.as_str()), (0, ""));
}
