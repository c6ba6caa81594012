//! exec, terminals and the console socket, preserved fds and socket activation.

mod common;

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn running(env: &mut Env, name: &str) -> String {
    let id = env.id(name);
    let b = env.bundle(name, &["sleep", "1000"]);
    b.write();
    let (ok, err) = env.quiet(&["run", "-d", "--bundle", b.path(), &id]);
    assert!(ok, "{err}");
    id
}

#[test]
fn exec_joins_the_containers_namespaces_and_returns_the_exit_code() {
    let mut env = Env::new();
    let id = running(&mut env, "exec");
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    let out = env.out(&[
        "exec",
        &id,
        "sh",
        "-c",
        "hostname; readlink /proc/self/ns/net; ps -o pid,comm | grep -c sleep; exit 3",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "lrun");
    let want = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert_eq!(lines[1], want.to_str().unwrap());
    // The init (sleep) is visible: exec runs in the container's pid namespace.
    assert_eq!(lines[2], "1");
    assert!(env.quiet(&["delete", "--force", &id]).0);
}

#[test]
fn exec_overrides_user_env_and_cwd() {
    let mut env = Env::new();
    let id = running(&mut env, "execu");
    let out = env.out(&[
        "exec",
        "--user",
        "1000:1000",
        "--env",
        "FOO=bar",
        "--cwd",
        "/tmp",
        &id,
        "sh",
        "-c",
        "id -u; echo $FOO; pwd",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1000\nbar\n/tmp\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(env.quiet(&["delete", "--force", &id]).0);
}

#[test]
fn exec_detach_writes_the_pid_file() {
    let mut env = Env::new();
    let id = running(&mut env, "execd");
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
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .starts_with("sleep")
    {
        assert!(
            Instant::now() < deadline,
            "pid file does not name the exec'd process"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(env.quiet(&["delete", "--force", &id]).0);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z")
    );
}

#[test]
fn exec_with_a_process_file() {
    let mut env = Env::new();
    let id = running(&mut env, "execp");
    let file = env.scratch.join("process.json");
    std::fs::write(
        &file,
        serde_json::to_vec(&json!({
            "args": ["sh", "-c", "echo $X; id -u"], "env": ["X=from-file", "PATH=/bin"], "cwd": "/",
            "user": {"uid": 2, "gid": 2}
        }))
        .unwrap(),
    )
    .unwrap();
    let out = env.out(&["exec", "--process", file.to_str().unwrap(), &id]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "from-file\n2\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(env.quiet(&["delete", "--force", &id]).0);
}

// runc accepts a process file without `user` (Go's zero value: uid 0, gid 0).
#[test]
fn exec_with_a_process_file_without_user_runs_as_root() {
    let mut env = Env::new();
    let id = running(&mut env, "execnouser");
    let file = env.scratch.join("process.json");
    std::fs::write(
        &file,
        serde_json::to_vec(&json!({"args": ["sh", "-c", "id -u; id -g"], "cwd": "/"})).unwrap(),
    )
    .unwrap();
    let out = env.out(&["exec", "-p", file.to_str().unwrap(), &id]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "0\n0\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(env.quiet(&["delete", "--force", &id]).0);
}

#[test]
fn exec_in_a_stopped_or_unknown_container_fails_clearly() {
    let mut env = Env::new();
    let id = env.id("stopped");
    let b = env.bundle("stopped", &["true"]);
    b.write();
    assert!(env.quiet(&["create", "--bundle", b.path(), &id]).0);
    assert!(env.quiet(&["start", &id]).0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.status(&id) != "stopped" {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let (ok, err) = env.quiet(&["exec", &id, "true"]);
    assert!(!ok && err.contains("stopped"), "{err}");
    let (ok, err) = env.quiet(&["exec", "no-such", "true"]);
    assert!(!ok && err.contains("does not exist"), "{err}");
    assert!(env.quiet(&["delete", &id]).0);
}

/// Accept one connection on a console socket and receive the pty master.
fn receive_pty(listener: &UnixListener) -> OwnedFd {
    let (conn, _) = listener.accept().unwrap();
    recv_with_fd(&conn)
        .1
        .expect("no fd received on the console socket")
}

#[test]
fn console_socket_receives_a_working_pty() {
    let mut env = Env::new();
    let sock = env.scratch.join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let id = env.id("tty");
    let mut b = env.bundle("tty", &["sh", "-c", "tty; echo done"]);
    b.config["process"]["terminal"] = json!(true);
    b.write();
    let mut create = env
        .lrun()
        .args([
            "create",
            "--bundle",
            b.path(),
            "--console-socket",
            sock.to_str().unwrap(),
            &id,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let master = receive_pty(&listener);
    let st = create.wait().unwrap();
    assert!(st.success());
    assert!(env.quiet(&["start", &id]).0);
    let mut f = std::fs::File::from(master);
    let mut out = String::new();
    let mut buf = [0u8; 1024];
    while !out.contains("done") {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    assert!(out.contains("/dev/pts/0"), "{out:?}");
    assert!(env.quiet(&["delete", "--force", &id]).0);
}

/// Read a pty master until `marker` shows (or the pty closes).
fn read_pty_until(master: OwnedFd, marker: &str) -> String {
    let mut f = std::fs::File::from(master);
    let mut out = String::new();
    let mut buf = [0u8; 1024];
    while !out.contains(marker) {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    out
}

/// runc's fixStdioPermissions: a non-root process's terminal is owned by its uid (the devpts
/// gid 5 is kept), for the container's process and for an exec'd one.
#[test]
fn the_pty_is_owned_by_a_non_root_process_user() {
    let mut env = Env::new();
    let sock = env.scratch.join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let id = env.id("ttyown");
    let mut b = env.bundle(
        "ttyown",
        &["sh", "-c", "stat -c owner=%u:%g $(tty); sleep 1000"],
    );
    b.config["process"]["terminal"] = json!(true);
    b.config["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    b.write();
    let sock_s = sock.to_str().unwrap().to_string();
    let mut run = env
        .lrun()
        .args([
            "run",
            "-d",
            "--bundle",
            b.path(),
            "--console-socket",
            &sock_s,
            &id,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let master = receive_pty(&listener);
    assert!(run.wait().unwrap().success());
    let out = read_pty_until(master, "owner=");
    assert!(out.contains("owner=1000:5"), "run: {out:?}");

    let mut exec = env
        .lrun()
        .args([
            "exec",
            "-t",
            "-d",
            "--console-socket",
            &sock_s,
            "--user",
            "1000:1000",
            &id,
            "sh",
            "-c",
            "stat -c owner=%u:%g $(tty)",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let master = receive_pty(&listener);
    let out = read_pty_until(master, "owner=");
    let _ = exec.wait();
    assert!(out.contains("owner=1000:5"), "exec: {out:?}");
    assert!(env.quiet(&["delete", "--force", &id]).0);
}

#[test]
fn terminal_without_console_socket_is_refused_for_create() {
    let mut env = Env::new();
    let id = env.id("notty");
    let mut b = env.bundle("notty", &["true"]);
    b.config["process"]["terminal"] = json!(true);
    b.write();
    let (ok, err) = env.quiet(&["create", "--bundle", b.path(), &id]);
    assert!(!ok && err.contains("--console-socket"), "{err}");
}

#[test]
fn stdio_pipes_stay_pipes_without_a_terminal() {
    let mut env = Env::new();
    let out = sh(&mut env, |_| {}, "readlink /proc/self/fd/1 | cut -d: -f1");
    assert_eq!(out, "pipe\n");
}

#[test]
fn preserved_fds_reach_the_container() {
    let mut env = Env::new();
    let b = env.bundle(
        "fds",
        &[
            "sh",
            "-c",
            "cat <&3; ls /proc/self/fd | sort -n | tr '\\n' ' '",
        ],
    );
    b.write();
    let id = env.id("fds");
    let file = env.scratch.join("payload");
    std::fs::write(&file, "through fd 3\n").unwrap();
    let script = format!(
        "exec 3<{} && exec {} --root {} run --preserve-fds 1 --bundle {} {}",
        file.display(),
        LRUN,
        env.root.display(),
        b.path(),
        id
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "through fd 3\n0 1 2 3 4 ",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn socket_activation_passes_listen_fds() {
    let mut env = Env::new();
    let b = env.bundle(
        "listen",
        &["sh", "-c", "echo $LISTEN_FDS $LISTEN_PID; cat <&3"],
    );
    b.write();
    let id = env.id("listen");
    let file = env.scratch.join("sock-standin");
    std::fs::write(&file, "activated\n").unwrap();
    let script = format!(
        "exec 3<{} && LISTEN_FDS=1 LISTEN_PID=$$ exec {} --root {} run --bundle {} {}",
        file.display(),
        LRUN,
        env.root.display(),
        b.path(),
        id
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1 1\nactivated\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The sd-notify fixture, built statically once (it must run in the busybox rootfs).
fn sd_notify_binary() -> std::path::PathBuf {
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sd-notify");
    if !out.exists() {
        let src = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/integration/fixtures/sd-notify.c"
        );
        let tmp = out.with_extension(format!("tmp{}", std::process::id()));
        let st = std::process::Command::new("cc")
            .args(["-static", "-O2", "-o"])
            .arg(&tmp)
            .arg(src)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "building the sd-notify fixture needs cc and static libc (libc6-dev)"
        );
        std::fs::rename(&tmp, &out).unwrap();
    }
    out
}

fn with_notifier(b: &mut Bundle) {
    let bin = sd_notify_binary();
    b.config["mounts"].as_array_mut().unwrap().push(json!({"destination": "/sd-notify", "type": "bind", "source": bin, "options": ["bind", "ro"]}));
}

fn recv_all(sock: &std::os::unix::net::UnixDatagram) -> String {
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("no notify message arrived");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn notify_socket_is_relayed_in_the_foreground() {
    let mut env = Env::new();
    let host = env.scratch.join("host-notify.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&host).unwrap();
    let mut b = env.bundle(
        "notify",
        &[
            "sh",
            "-c",
            "/sd-notify 'READY=1\\nSTATUS=serving\\nMAINPID=1'",
        ],
    );
    with_notifier(&mut b);
    b.write();
    let id = env.id("notify");
    let out = env
        .lrun()
        .env("NOTIFY_SOCKET", &host)
        .args(["run", "--bundle", b.path(), &id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let msg = recv_all(&listener);
    let lines: Vec<&str> = msg.lines().collect();
    assert!(
        lines.contains(&"READY=1") && lines.contains(&"STATUS=serving"),
        "{msg:?}"
    );
    assert!(
        !lines.contains(&"MAINPID=1"),
        "the container's own pid leaked to the host: {msg:?}"
    );
}

#[test]
fn detached_start_waits_for_ready_and_reports_the_main_pid() {
    let mut env = Env::new();
    let host = env.scratch.join("host-notify.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&host).unwrap();
    let mut b = env.bundle(
        "notifyd",
        &["sh", "-c", "sleep 0.3; /sd-notify READY=1; exec sleep 1000"],
    );
    with_notifier(&mut b);
    b.write();
    let id = env.id("notifyd");
    let st = env
        .lrun()
        .env("NOTIFY_SOCKET", &host)
        .args(["run", "-d", "--bundle", b.path(), &id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    // start returned only after READY=1, so the message is already waiting.
    listener.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let n = listener
        .recv(&mut buf)
        .expect("READY=1 not relayed before start returned");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}");
    assert!(
        msg.lines().any(|l| l == format!("MAINPID={pid}")),
        "{msg:?}"
    );
    assert!(env.quiet(&["delete", "--force", &id]).0);
}

/// runc's exec: `--user UID` sets the uid only, the gid stays the config's; `UID:GID` sets both.
#[test]
fn exec_user_uid_alone_keeps_the_configs_gid() {
    let mut env = Env::new();
    let id = env.id("execgid");
    let mut b = env.bundle("execgid", &["sleep", "1000"]);
    b.config["process"]["user"] = json!({"uid": 0, "gid": 1234});
    b.write();
    let (ok, err) = env.quiet(&["run", "-d", "--bundle", b.path(), &id]);
    assert!(ok, "{err}");
    let ids = |user: &str| {
        let out = env.out(&["exec", "--user", user, &id, "sh", "-c", "id -u; id -g"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(ids("1000"), "1000\n1234\n");
    assert_eq!(ids("1000:7"), "1000\n7\n");
    assert!(env.quiet(&["delete", "--force", &id]).0);
}
