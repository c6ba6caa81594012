//! Security tests: see integration/security.rs. The container process and what it can reach
//! of the host before and after exec: fds (inherited or lrun's own) as a way out through
//! process.cwd, the runtime binary through /proc/PID/exe, secrets in the state directory,
//! processes that outlive a killed `create`, and what hooks inherit.

use std::collections::BTreeSet;
use std::fs;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{Bundle, Env};

/// Give a command extra open fds (not close-on-exec) at the given numbers, as a careless
/// caller would: (target number, file to open there).
fn with_fds(cmd: &mut Command, fds: Vec<(RawFd, fs::File)>) -> &mut Command {
    // SAFETY: dup2 is async-signal-safe; the files live in the closure until exec.
    unsafe {
        cmd.pre_exec(move || {
            for (target, f) in &fds {
                // dup2 onto itself would keep close-on-exec.
                let rc = if f.as_raw_fd() == *target {
                    libc::fcntl(*target, libc::F_SETFD, 0)
                } else {
                    libc::dup2(f.as_raw_fd(), *target)
                };
                if rc < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        })
    }
}

fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run lrun")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn host_hostname() -> String {
    fs::read_to_string("/etc/hostname")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Bind-mount a scratch directory at /mnt of the container (the shared rootfs stays as is).
fn mount_scratch(b: &mut Bundle, dir: &Path) {
    b.config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/mnt", "type": "bind", "source": dir, "options": ["rbind", "rw"]
    }));
}

/// The CVE-2024-21626 attack: process.cwd through an fd the init holds (fd 4 was the state
/// directory), or through a directory fd inherited from the caller. Nothing may land outside
/// the root, and the host's files must stay out of reach, even with a read-only root.
#[test]
fn cwd_through_a_held_fd_cannot_leave_the_root() {
    let mut env = Env::new();
    // Above the state root (ROOT/ID/../..): the test's own directory.
    let base = env.root.parent().unwrap().to_path_buf();
    let outside = env.scratch.join("outside-dir");
    fs::create_dir_all(&outside).unwrap();
    let hostname = host_hostname();
    for n in 3..=12 {
        let mut b = env.bundle(
            "cwd",
            &[
                "sh",
                "-c",
                "echo x > ../../ESCAPED; echo x > ESCAPED-HERE; cat ../../../../etc/hostname",
            ],
        );
        b.config["process"]["cwd"] = json!(format!("/proc/self/fd/{n}"));
        b.config["root"]["readonly"] = json!(true);
        b.write();
        let id = env.id("cwd");
        // The caller holds a directory outside the container at fd 7.
        let dir = fs::File::open(&outside).unwrap();
        let out = output(with_fds(
            env.lrun().args(["run", "--bundle", b.path(), &id]),
            vec![(7, dir)],
        ));
        let stdout = text(&out.stdout);
        assert!(
            !base.join("ESCAPED").exists() && !outside.join("ESCAPED-HERE").exists(),
            "cwd /proc/self/fd/{n} wrote outside the root: {stdout} {}",
            text(&out.stderr)
        );
        assert!(
            hostname.is_empty() || !stdout.contains(&hostname),
            "cwd /proc/self/fd/{n} read the host's /etc/hostname: {stdout}"
        );
    }
    // create + start: the init waits for start holding whatever it needs for that.
    let mut b = env.bundle("cwd", &["sh", "-c", "echo x > ../../ESCAPED"]);
    b.config["process"]["cwd"] = json!("/proc/self/fd/4");
    b.write();
    let id = env.id("cwdcreate");
    let (created, err) = env.quiet(&["create", "--bundle", b.path(), &id]);
    if created {
        assert!(env.quiet(&["start", &id]).0);
        std::thread::sleep(Duration::from_millis(200));
    } else {
        assert!(err.contains("process.cwd"), "{err}");
    }
    assert!(!base.join("ESCAPED").exists(), "create/start escaped");

    // A directory the caller passes on purpose (--preserve-fds) stays open in the init: the
    // check after chdir is what stops the cwd there.
    let mut b = env.bundle("cwd", &["sh", "-c", "echo x > ESCAPED-HERE"]);
    b.config["process"]["cwd"] = json!("/proc/self/fd/3");
    b.write();
    let id = env.id("cwdpreserved");
    let out = output(with_fds(
        env.lrun()
            .args(["run", "--preserve-fds", "1", "--bundle", b.path(), &id]),
        vec![(3, fs::File::open(&outside).unwrap())],
    ));
    assert!(
        !outside.join("ESCAPED-HERE").exists(),
        "a preserved fd led the cwd out"
    );
    assert!(
        text(&out.stderr).contains("leads outside the container's root"),
        "{}",
        text(&out.stderr)
    );
}

/// The same through `lrun exec`: its process's cwd, and a directory fd the caller of
/// `lrun exec` left open.
#[test]
fn exec_cwd_through_a_held_fd_cannot_leave_the_root() {
    let mut env = Env::new();
    let base = env.root.parent().unwrap().to_path_buf();
    let outside = env.scratch.join("outside-dir");
    fs::create_dir_all(&outside).unwrap();
    let b = env.bundle("execcwd", &["sleep", "1000"]);
    b.write();
    let id = env.id("execcwd");
    assert!(env.quiet(&["run", "-d", "--bundle", b.path(), &id]).0);
    let hostname = host_hostname();
    for n in 3..=12 {
        let dir = fs::File::open(&outside).unwrap();
        let cwd = format!("/proc/self/fd/{n}");
        let out = output(with_fds(
            env.lrun().args([
                "exec",
                "--cwd",
                &cwd,
                &id,
                "sh",
                "-c",
                "echo x > ../../ESCAPED; echo x > ESCAPED-HERE; cat ../../../../etc/hostname",
            ]),
            vec![(7, dir)],
        ));
        let stdout = text(&out.stdout);
        assert!(
            !base.join("ESCAPED").exists() && !outside.join("ESCAPED-HERE").exists(),
            "exec --cwd {cwd} wrote outside the root: {stdout} {}",
            text(&out.stderr)
        );
        assert!(
            hostname.is_empty() || !stdout.contains(&hostname),
            "exec --cwd {cwd} read the host's /etc/hostname: {stdout}"
        );
    }
    let out = output(with_fds(
        env.lrun().args([
            "exec",
            "--preserve-fds",
            "1",
            "--cwd",
            "/proc/self/fd/3",
            &id,
            "sh",
            "-c",
            "echo x > ESCAPED-HERE",
        ]),
        vec![(3, fs::File::open(&outside).unwrap())],
    ));
    assert!(
        !outside.join("ESCAPED-HERE").exists(),
        "a preserved fd led the cwd out"
    );
    assert!(
        text(&out.stderr).contains("leads outside the container's root"),
        "{}",
        text(&out.stderr)
    );
}

/// A static C program built for the container (skips the test without gcc or a static libc).
fn build_static(env: &Env, source: &str, name: &str) -> Option<PathBuf> {
    let dir = env.scratch.join("bin");
    fs::create_dir_all(&dir).unwrap();
    let out = dir.join(name);
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("integration/fixtures")
        .join(source);
    let st = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .stderr(Stdio::null())
        .status();
    match st {
        Ok(s) if s.success() => Some(out),
        _ => {
            lrun::test_support::skip(&format!("gcc -static could not build {source}"));
            None
        }
    }
}

/// A scratch copy of lrun: what the attack may reach is only ever this copy.
struct LrunCopy {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl LrunCopy {
    fn new(env: &Env) -> LrunCopy {
        let path = env.scratch.join("lrun-copy");
        fs::copy(crate::common::LRUN, &path).unwrap();
        let bytes = fs::read(&path).unwrap();
        LrunCopy { path, bytes }
    }
    fn cmd(&self, env: &Env) -> Command {
        let mut c = Command::new(&self.path);
        c.arg("--root").arg(&env.root);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }
    /// `run -d` of this bundle with the copy; returns the container's id.
    fn run_detached(&self, env: &mut Env, b: &Bundle, name: &str) -> String {
        let id = env.id(name);
        let st = self
            .cmd(env)
            .args(["run", "-d", "--bundle", b.path(), &id])
            .status()
            .unwrap();
        assert!(st.success(), "run -d {id}");
        id
    }
    fn ino_dev(&self) -> (String, String) {
        let m = fs::metadata(&self.path).unwrap();
        (m.ino().to_string(), m.dev().to_string())
    }
    fn assert_unchanged(&self) {
        assert!(
            fs::read(&self.path).unwrap() == self.bytes,
            "the container overwrote the runtime binary (the scratch copy)"
        );
    }
}

/// Start the attacker in the container through `lrun exec -d`; returns its report path.
fn start_attacker(env: &Env, lrun: &LrunCopy, id: &str, mode: &str, secs: &str) -> PathBuf {
    let (ino, dev) = lrun.ino_dev();
    let name = format!("report-{mode}");
    let report = env.scratch.join("attack").join(&name);
    let st = lrun
        .cmd(env)
        .args(["exec", "-d", id, "/mnt/exe-grab", &ino, &dev, secs, mode])
        .arg(format!("/mnt/{name}"))
        .status()
        .unwrap();
    assert!(st.success(), "exec the attacker");
    wait_for("the attacker to start", || {
        report.with_extension("ready").exists()
    });
    report
}

fn read_report(report: &Path) -> String {
    wait_for("the attacker's report", || report.exists());
    fs::read_to_string(report).unwrap()
}

fn attack_bundle(env: &Env, args: &[&str]) -> Option<Bundle> {
    let dir = env.scratch.join("attack");
    fs::create_dir_all(&dir).unwrap();
    let bin = build_static(env, "exe-grab.c", "exe-grab")?;
    fs::copy(bin, dir.join("exe-grab")).unwrap();
    let mut b = env.bundle("exe", args);
    mount_scratch(&mut b, &dir);
    b.write();
    Some(b)
}

/// The CVE-2019-5736 class during `lrun exec`: a process in the container watches for new
/// processes (each `lrun exec` is lrun's binary until execve) and tries to open their exe.
#[test]
fn exec_never_exposes_the_runtime_binary() {
    let mut env = Env::new();
    let Some(b) = attack_bundle(&env, &["sleep", "1000"]) else {
        return;
    };
    let lrun = LrunCopy::new(&env);
    let id = lrun.run_detached(&mut env, &b, "exe");
    scan_while(&mut env, &lrun, &id, "exec", |env, lrun| {
        lrun.cmd(env).args(["exec", &id, "true"]).status()
    });
}

/// Start the scanning attacker in container `id`, run `step` (an lrun command whose process
/// the attacker can see) again and again for 2.5 s, then assert the attacker never opened
/// lrun's exe and the binary is unchanged.
fn scan_while(
    env: &mut Env,
    lrun: &LrunCopy,
    id: &str,
    what: &str,
    mut step: impl FnMut(&mut Env, &LrunCopy) -> std::io::Result<std::process::ExitStatus>,
) {
    let report = start_attacker(env, lrun, id, "scan", "3");
    let end = Instant::now() + Duration::from_millis(2500);
    let mut steps = 0;
    while Instant::now() < end {
        // A failing step may mean the copy was overwritten: the report and the bytes tell.
        if !step(env, lrun).is_ok_and(|s| s.success()) {
            break;
        }
        steps += 1;
    }
    let r = read_report(&report);
    assert!(steps > 0, "no {what} ran");
    assert!(
        r.contains(" got 0 "),
        "the container opened lrun's exe: {r} ({steps} {what}s)"
    );
    lrun.assert_unchanged();
}

/// The same at `lrun start`: an attacker exec'd into a created container watches pid 1 (lrun's
/// init until it execs the program) while `start` lets it go.
#[test]
fn start_never_exposes_the_runtime_binary() {
    let mut env = Env::new();
    let Some(b) = attack_bundle(&env, &["sleep", "1000"]) else {
        return;
    };
    let lrun = LrunCopy::new(&env);
    for round in 0..5 {
        let id = env.id("exestart");
        assert!(
            lrun.cmd(&env)
                .args(["create", "--bundle", b.path(), &id])
                .status()
                .unwrap()
                .success()
        );
        let report = start_attacker(&env, &lrun, &id, "pid1", "0.6");
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            lrun.cmd(&env)
                .args(["start", &id])
                .status()
                .unwrap()
                .success()
        );
        let r = read_report(&report);
        assert!(
            r.contains(" got 0 "),
            "round {round}: the container opened lrun's exe: {r}"
        );
        lrun.assert_unchanged();
        fs::remove_file(&report).unwrap();
        fs::remove_file(report.with_extension("ready")).unwrap();
        assert!(env.quiet(&["delete", "--force", &id]).0);
    }
}

/// Secrets in config.json (process.env), the state and the compiled seccomp filter are
/// root's only: user nobody cannot read them.
#[test]
fn state_files_are_unreadable_by_other_users() {
    let mut env = Env::new();
    let mut b = env.bundle("secret", &["sleep", "1000"]);
    b.config["process"]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!("DB_PASSWORD=hunter2-secret"));
    b.write();
    let id = env.id("secret");
    // The test's own directory above the state root is open to all: only lrun's modes protect.
    let base = env.root.parent().unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(base, fs::Permissions::from_mode(0o755)).unwrap();
    // This create makes the state root (the seccomp cache would make it 0700: comes second).
    let (ok, err) = env.quiet(&["create", "--bundle", b.path(), &id]);
    assert!(ok, "{err}");
    b.config["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["kexec_load"], "action": "SCMP_ACT_ERRNO"}]});
    b.write();
    let with_filter = env.id("secret");
    let (ok, err) = env.quiet(&["create", "--bundle", b.path(), &with_filter]);
    assert!(ok, "{err}");
    let dir = env.root.join(&id);
    let cache = env.root.join(".seccomp-cache");
    let mut files = vec![
        dir.join("config.json"),
        dir.join("state.json"),
        dir.join("exec.fifo"),
        env.root.join(&with_filter).join("config.json"),
    ];
    files.extend(fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()));
    for f in &files {
        assert!(f.exists(), "{} missing", f.display());
        let out = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                "timeout",
                "2",
                "cat",
            ])
            .arg(f)
            .stdin(Stdio::null())
            .output();
        let Ok(out) = out else {
            lrun::test_support::skip("setpriv is missing");
            return;
        };
        assert!(
            !out.status.success() && !text(&out.stdout).contains("hunter2"),
            "nobody read {}: {}",
            f.display(),
            text(&out.stdout)
        );
    }
    // Listing the container's directory is denied too.
    let ls = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "ls"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!ls.status.success(), "nobody listed {}", dir.display());
    // root still sees it all.
    assert_eq!(env.status(&id), "created");
    assert!(env.quiet(&["start", &id]).0);
    assert_eq!(env.status(&id), "running");
    let list = env.out(&["list"]);
    assert!(text(&list.stdout).contains(&id));
}

/// Pids whose command line names this container id (lrun's init before exec, its
/// intermediate, hooks given the id).
fn pids_naming(id: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| p != me)
        .filter(|p| {
            fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| text(&c).contains(id))
                .unwrap_or(false)
        })
        .filter(|p| {
            // Zombies are dead already.
            fs::read_to_string(format!("/proc/{p}/stat"))
                .map(|s| {
                    !s.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
                .unwrap_or(false)
        })
        .collect()
}

/// SIGKILL `lrun create` at many points of its work: a container that was not recorded as
/// created must not keep a process (it would stay "creating" until gc, or forever).
#[test]
fn killed_create_leaves_no_process_behind() {
    let mut env = Env::new();
    let b = env.bundle("killcreate", &["true"]);
    b.write();
    // How long one create takes here (the fastest of a few).
    let mut full = Duration::from_secs(10);
    for _ in 0..3 {
        let id = env.id("killcreate");
        let t = Instant::now();
        assert!(env.quiet(&["create", "--bundle", b.path(), &id]).0);
        full = full.min(t.elapsed());
        assert!(env.quiet(&["delete", "--force", &id]).0);
    }
    // The narrow windows sit at the start (clone vs pdeathsig) and at the end (the init is
    // ready, the state not yet saved): kills spread over the whole create, denser at its end.
    let rounds = 80;
    let mut survivors = Vec::new();
    for i in 0..rounds {
        let id = env.id("killcreate");
        let delay = full.mul_f64(match i % 4 {
            0 => 1.1 * i as f64 / rounds as f64,
            _ => 0.7 + 0.4 * i as f64 / rounds as f64,
        });
        let mut child = env
            .lrun()
            .args(["create", "--bundle", b.path(), &id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        // pdeathsig and EOF are asynchronous: give the kernel a moment. A create that got as
        // far as recording the container may leave it created, with its init.
        let recorded = |left: &[i32]| {
            let st = env.out(&["state", &id]);
            let doc: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap_or_default();
            doc["status"] == "created"
                && left.iter().all(|p| doc["pid"].as_i64() == Some(*p as i64))
        };
        // Exiting takes a while on a loaded machine (namespace teardown): a survivor is one
        // still there after seconds.
        let end = Instant::now() + Duration::from_secs(3);
        let survived = loop {
            let left = pids_naming(&id);
            if left.is_empty() || recorded(&left) {
                break None;
            }
            if Instant::now() > end {
                break Some(left);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Some(left) = survived {
            let st = env.out(&["state", &id]);
            survivors.push((id.clone(), left.clone(), text(&st.stdout), text(&st.stderr)));
            for p in &left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = env.quiet(&["delete", "--force", &id]);
    }
    assert!(
        survivors.is_empty(),
        "processes outlived a killed create: {survivors:#?}"
    );
}

/// The caller's fds must not reach the container even when its seccomp filter makes
/// close_range fail (ENOSYS as on old kernels, or EPERM): for `run` and for `exec`.
#[test]
fn caller_fds_do_not_reach_the_container_when_close_range_is_denied() {
    let mut env = Env::new();
    let secret = env.scratch.join("host-secret");
    fs::write(&secret, "host-secret-content\n").unwrap();
    for errno in [38, 1] {
        let mut b = env.bundle(
            "closerange",
            &["sh", "-c", "cat /proc/self/fd/7; ls /proc/self/fd"],
        );
        b.config["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["close_range"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno}]});
        b.write();
        let id = env.id("closerange");
        let out = output(with_fds(
            env.lrun().args(["run", "--bundle", b.path(), &id]),
            vec![(7, fs::File::open(&secret).unwrap())],
        ));
        assert!(
            !text(&out.stdout).contains("host-secret-content"),
            "errno {errno}: the container read the caller's fd 7: {}",
            text(&out.stdout)
        );

        let mut b = env.bundle("closerange", &["sleep", "1000"]);
        b.config["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["close_range"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno}]});
        b.write();
        let id = env.id("closerange");
        assert!(env.quiet(&["run", "-d", "--bundle", b.path(), &id]).0);
        let out = output(with_fds(
            env.lrun().args(["exec", &id, "cat", "/proc/self/fd/7"]),
            vec![(7, fs::File::open(&secret).unwrap())],
        ));
        assert!(
            !text(&out.stdout).contains("host-secret-content"),
            "errno {errno}: an exec'd process read the caller's fd 7"
        );
        // What --preserve-fds asks for still gets through.
        let out = output(with_fds(
            env.lrun()
                .args(["exec", "--preserve-fds", "1", &id, "cat", "/proc/self/fd/3"]),
            vec![(3, fs::File::open(&secret).unwrap())],
        ));
        assert_eq!(
            text(&out.stdout),
            "host-secret-content\n",
            "{}",
            text(&out.stderr)
        );
        assert!(env.quiet(&["delete", "--force", &id]).0);
    }
}

/// Every hook gets stdin (the state), stdout and stderr, and no other fd: not lrun's own,
/// nor the ones the caller of create, start or delete left open (10 and 251 here).
#[test]
fn hooks_get_only_stdio() {
    let mut env = Env::new();
    let out = env.scratch.join("hooks");
    fs::create_dir_all(&out).unwrap();
    let Some(bin) = build_static(&env, "fd-list.c", "fd-list") else {
        return;
    };
    fs::copy(bin, out.join("fd-list")).unwrap();
    let list = |dir: &Path, kind: &str| {
        let path = dir.join("fd-list");
        json!({"path": path, "args": ["fd-list", dir.join(kind)]})
    };
    let mut b = env.bundle("hooks", &["true"]);
    mount_scratch(&mut b, &out);
    b.config["hooks"] = json!({
        "prestart": [list(&out, "prestart")],
        "createRuntime": [list(&out, "createRuntime")],
        "createContainer": [list(&out, "createContainer")],
        // Runs in the container: /mnt is the scratch directory.
        "startContainer": [list(Path::new("/mnt"), "startContainer")],
        "poststart": [list(&out, "poststart")],
        "poststop": [list(&out, "poststop")],
    });
    b.write();
    let id = env.id("hooks");
    let stray = env.scratch.join("stray");
    fs::write(&stray, "x").unwrap();
    let strays = || {
        vec![
            (10, fs::File::open(&stray).unwrap()),
            (251, fs::File::open(&stray).unwrap()),
        ]
    };
    for args in [
        vec!["create", "--bundle", b.path(), &id],
        vec!["start", &id],
        vec!["delete", "--force", &id],
    ] {
        let mut cmd = env.lrun();
        cmd.args(&args).stdout(Stdio::null()).stderr(Stdio::null());
        let st = with_fds(&mut cmd, strays())
            .stdin(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "lrun {args:?}");
        if args[0] == "start" {
            wait_for("the container to exit", || env.status(&id) == "stopped");
        }
    }
    for kind in [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ] {
        let fds: BTreeSet<String> = fs::read_to_string(out.join(kind))
            .unwrap_or_else(|e| panic!("hook {kind} did not run: {e}"))
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let stdio: BTreeSet<String> = ["0", "1", "2"].map(String::from).into();
        assert_eq!(fds, stdio, "hook {kind} had fds {fds:?}");
    }
}

/// lrun stays non-dumpable (see the tests above), so a container's own /proc files are root's
/// and out of reach of the root of a user namespace: what lrun set through them (oomScoreAdj,
/// time offsets) must still be applied, by the parent.
#[test]
fn user_namespace_setup_works_while_non_dumpable() {
    let mut env = Env::new();
    let mut b = env.bundle(
        "userns",
        &[
            "sh",
            "-c",
            "cat /proc/self/oom_score_adj; grep monotonic /proc/self/timens_offsets; id -u",
        ],
    );
    let ns = b.config["linux"]["namespaces"].as_array_mut().unwrap();
    ns.push(json!({"type": "user"}));
    ns.push(json!({"type": "time"}));
    b.config["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.config["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.config["linux"]["timeOffsets"] = json!({"monotonic": {"secs": 4242, "nanosecs": 0}});
    b.config["process"]["oomScoreAdj"] = json!(300);
    for m in b.config["mounts"].as_array_mut().unwrap() {
        if m["type"] == "sysfs" {
            *m = json!({"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
        }
    }
    b.config["mounts"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["type"] != "cgroup");
    let (code, out, err) = crate::common::run(&mut env, &b);
    assert_eq!(code, 0, "{err}");
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words, ["300", "monotonic", "4242", "0", "0"], "{out}");
}

/// The same through a sibling: container B joins container A's pid namespace, so every
/// `lrun run` of B puts lrun's init (lrun's binary until it execs) in A's view, where the
/// attacker scans /proc for it.
#[test]
fn sibling_in_a_shared_pid_namespace_never_reaches_the_runtime_binary() {
    let mut env = Env::new();
    let Some(a) = attack_bundle(&env, &["sleep", "1000"]) else {
        return;
    };
    let lrun = LrunCopy::new(&env);
    let id_a = lrun.run_detached(&mut env, &a, "exe-sib-a");
    let pid_a = env.state(&id_a)["pid"].as_i64().unwrap();
    let mut b = env.bundle("exe-sib-b", &["true"]);
    for ns in b.config["linux"]["namespaces"].as_array_mut().unwrap() {
        if ns["type"] == "pid" {
            ns["path"] = serde_json::json!(format!("/proc/{pid_a}/ns/pid"));
        }
    }
    b.write();
    scan_while(&mut env, &lrun, &id_a, "sibling run", |env, lrun| {
        let id_b = env.id("exe-sib-b");
        lrun.cmd(env)
            .args(["run", "--bundle", b.path(), &id_b])
            .status()
    });
}
