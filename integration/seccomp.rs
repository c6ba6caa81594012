//! linux.seccomp enforced in real containers: the default profile runs a shell, errnoRet and
//! kill actions reach the container's program, bad profiles fail `create` with one line.

mod common;

use common::*;
use serde_json::{Value, json};

fn default_profile() -> Value {
    serde_json::from_str(include_str!("fixtures/seccomp-default.json")).unwrap()
}

#[test]
fn a_shell_runs_under_the_default_profile_which_denies_unshare() {
    let mut env = Env::new();
    // Creating a user namespace needs no capability, so only the profile can stop it.
    let script = "echo ok; ls / >/dev/null; grep -c '^Seccomp:.2' /proc/self/status; \
                  unshare -U true 2>/dev/null && echo unshare-allowed; echo done";
    let out = sh(
        &mut env,
        |b| b.config["linux"]["seccomp"] = default_profile(),
        script,
    );
    assert_eq!(out, "ok\n1\ndone\n");
    let out = sh(&mut env, |_| {}, script);
    assert_eq!(
        out, "ok\n0\nunshare-allowed\ndone\n",
        "control without seccomp"
    );
}

#[test]
fn errno_ret_reaches_the_program_and_unknown_names_are_skipped() {
    let mut env = Env::new();
    let out = sh(
        &mut env,
        |b| {
            b.config["linux"]["seccomp"] = json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{
                    "names": ["lrun_no_such_syscall", "mkdir", "mkdirat"],
                    "action": "SCMP_ACT_ERRNO",
                    "errnoRet": 28
                }]
            })
        },
        "mkdir /tmp/x 2>&1; test -d /tmp/x && echo created; true",
    );
    assert!(out.contains("No space left on device"), "{out}");
    assert!(!out.contains("created"), "{out}");
}

#[test]
fn kill_process_ends_the_container_with_sigsys() {
    let mut env = Env::new();
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL_PROCESS"}]
    });
    // The container's process itself is killed.
    let mut b = env.bundle("kill", &["mkdir", "/tmp/x"]);
    b.config["linux"]["seccomp"] = profile.clone();
    let (code, out, err) = run(&mut env, &b);
    assert_eq!(code, 128 + libc::SIGSYS, "stdout: {out} stderr: {err}");
    // A shell's forked child is killed, and the shell sees it.
    let mut b = env.bundle("kill", &["sh", "-c", "mkdir /tmp/x 2>/dev/null; echo $?"]);
    b.config["linux"]["seccomp"] = profile;
    let (code, out, _) = run(&mut env, &b);
    assert_eq!((code, out.as_str()), (0, "159\n"));
}

#[test]
fn a_bad_profile_fails_create_with_one_line_naming_the_field() {
    let mut env = Env::new();
    let mut b = env.bundle("badseccomp", &["true"]);
    b.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "errnoRet": 1}]
    });
    b.write();
    let id = env.id("badseccomp");
    let (ok, err) = env.quiet(&["create", "--bundle", b.path(), &id]);
    assert!(!ok, "create succeeded with a bad profile");
    assert!(
        !env.root.join(&id).exists(),
        "state left after failed create"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("linux.seccomp.syscalls[0].errnoRet"), "{err}");
}

#[test]
fn an_unknown_action_fails_create_naming_the_field() {
    let mut env = Env::new();
    let mut b = env.bundle("badaction", &["true"]);
    b.config["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_FROB"});
    b.write();
    let id = env.id("badaction");
    let (ok, err) = env.quiet(&["create", "--bundle", b.path(), &id]);
    assert!(!ok, "create succeeded with an unknown action");
    assert!(err.contains("linux.seccomp.defaultAction"), "{err}");
}

#[test]
fn notify_listener_reaches_the_agent_with_the_container_state() {
    use std::io::Read;

    let mut env = Env::new();
    let sock = env.scratch.join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let mut b = env.bundle("notify", &["true"]);
    b.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": sock,
        "listenerMetadata": "from-the-test",
        "syscalls": [{"names": ["mknodat"], "action": "SCMP_ACT_NOTIFY"}]
    });
    b.write();
    let id = env.id("notify");
    let mut child = env
        .lrun()
        .args(["run", "--bundle", b.path(), &id])
        .spawn()
        .unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    let (first, fd) = recv_with_fd(&conn);
    let got_fd = fd.is_some();
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).unwrap();
    let mut payload = first;
    payload.extend(rest);
    assert!(got_fd, "no listener fd came with the message");
    let v: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(v["fds"], json!(["seccompFd"]));
    assert_eq!(v["metadata"], "from-the-test");
    assert_eq!(v["state"]["id"], id.as_str());
    assert!(
        v["pid"].as_i64().unwrap() > 1,
        "pid must be the host's view: {v}"
    );
    assert!(child.wait().unwrap().success());
}

/// Issue 14 item 7: startContainer hooks run under the container's filter (and user), as
/// runc's and crun's do, with no_new_privs on or off: here a hook's mkdir is refused.
#[test]
fn start_container_hooks_run_under_the_containers_filter() {
    for nnp in [false, true] {
        let mut env = Env::new();
        let rc = env.scratch.join("hook.rc");
        let mut b = env.bundle("hookseccomp", &["true"]);
        b.config["process"]["noNewPrivileges"] = json!(nnp);
        b.config["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        });
        b.config["hooks"] = json!({"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c",
            format!("mkdir /tmp/hookdir 2>/dev/null; echo $? > {}", rc.display())]}]});
        b.config["mounts"].as_array_mut().unwrap().push(json!({"destination": env.scratch, "type": "bind", "source": env.scratch, "options": ["rbind"]}));
        let (code, out, err) = run(&mut env, &b);
        assert_eq!(code, 0, "nnp {nnp}: stdout: {out} stderr: {err}");
        assert_eq!(
            std::fs::read_to_string(&rc).unwrap().trim(),
            "1",
            "nnp {nnp}: the hook's mkdir was not refused"
        );
    }
}

/// runtime-spec/seccomp.md: a process started by `exec` gets its own listener, and it reaches
/// the container's agent like the init's (it used to get ENOSYS: nobody held its listener).
#[test]
fn notify_listener_of_an_exec_process_reaches_the_agent() {
    use std::io::Read;
    use std::os::fd::AsRawFd;

    let mut env = Env::new();
    let sock = env.scratch.join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let mut b = env.bundle("notifyx", &["sleep", "1000"]);
    b.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": sock,
        "syscalls": [{"names": ["mknodat"], "action": "SCMP_ACT_NOTIFY"}]
    });
    b.write();
    let id = env.id("notifyx");
    let agent = std::thread::spawn(move || {
        let mut got = Vec::new();
        for _ in 0..2 {
            let (mut conn, _) = listener.accept().unwrap();
            let (mut payload, fd) = recv_with_fd(&conn);
            let mut rest = Vec::new();
            conn.read_to_end(&mut rest).unwrap();
            payload.extend(rest);
            got.push((
                serde_json::from_slice::<Value>(&payload).unwrap(),
                fd.unwrap(),
            ));
        }
        // Answer the exec'd process's mknodat with EPERM, as an agent would.
        let fd = got[1].1.as_raw_fd();
        // SAFETY: plain ioctls on the listener with structs of the kernel's layout.
        unsafe {
            let mut req: libc::seccomp_notif = std::mem::zeroed();
            assert_eq!(libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req), 0);
            assert_eq!(req.data.nr as i64, libc::SYS_mknodat);
            let mut resp: libc::seccomp_notif_resp = std::mem::zeroed();
            resp.id = req.id;
            resp.error = -libc::EPERM;
            assert_eq!(
                libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp),
                0
            );
        }
        got.into_iter().map(|(v, _)| v).collect::<Vec<_>>()
    });
    let (ok, err) = env.quiet(&["run", "-d", "--bundle", b.path(), &id]);
    assert!(ok, "{err}");
    let out = env.out(&["exec", &id, "sh", "-c", "mknod /tmp/p p; echo rc=$?"]);
    let init_pid = env.state(&id)["pid"].as_i64().unwrap();
    assert!(env.quiet(&["delete", "--force", &id]).0);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    // Before the agent's answer came through, mknod failed with ENOSYS ("Function not
    // implemented") and the agent waited for a second connection that never came.
    assert_eq!(stdout, "rc=1\n", "{stderr}");
    assert!(stderr.contains("Operation not permitted"), "{stderr}");
    let got = agent.join().unwrap();
    assert_eq!(got[0]["pid"], json!(init_pid));
    let exec_pid = got[1]["pid"].as_i64().unwrap();
    assert!(exec_pid > 1 && exec_pid != init_pid, "{}", got[1]);
    assert_eq!(got[1]["state"]["pid"], json!(init_pid));
    assert_eq!(got[1]["state"]["status"], "running");
    assert_eq!(got[1]["fds"], json!(["seccompFd"]));
}
