//! Compilation tests, and kernel tests: a forked child loads the filter, makes raw syscalls and
//! reports through its exit status what happened; the parent checks.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Instant;

use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};
use oci_spec::runtime::LinuxSeccomp;

use super::*;

const DEFAULT_PROFILE: &str = include_str!("../../integration/fixtures/seccomp-default.json");

fn parse(json: &str) -> LinuxSeccomp {
    match serde_json::from_str(json) {
        Ok(s) => s,
        Err(e) => panic!("test profile does not parse: {e}\n{json}"),
    }
}

fn compile(json: &str) -> Filter {
    match prepare(&parse(json)) {
        Ok(f) => f,
        Err(e) => panic!("prepare failed: {e:#}\n{json}"),
    }
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Exited(i32),
    Killed(Signal),
}

/// The exit code a child uses when the filter did not load.
const LOAD_FAILED: i32 = 200;

/// Fork; the child loads `filter`, runs `body` and exits with its result. `body` must not
/// allocate or take locks: the test harness is multi-threaded.
fn in_child(filter: &Filter, body: impl FnOnce(Option<OwnedFd>) -> i32) -> Outcome {
    // SAFETY: the child makes only raw syscalls and leaves with _exit.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            // SIGSYS deaths would otherwise dump core.
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: plain syscalls on this process.
            unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
            let code = match filter.load() {
                Ok(listener) => body(listener),
                Err(_) => LOAD_FAILED,
            };
            // SAFETY: leaving the child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => wait(child),
        Err(e) => panic!("fork: {e}"),
    }
}

fn wait(child: nix::unistd::Pid) -> Outcome {
    match waitpid(child, None) {
        Ok(WaitStatus::Exited(_, code)) => Outcome::Exited(code),
        Ok(WaitStatus::Signaled(_, sig, _)) => Outcome::Killed(sig),
        other => panic!("waitpid: {other:?}"),
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

/// Raw getppid with a chosen first and second argument: the kernel ignores them, the filter
/// sees them, which makes it a harmless probe for argument comparisons.
fn getppid_with(a0: u64, a1: u64) -> i32 {
    // SAFETY: getppid ignores its arguments.
    let rc = unsafe { libc::syscall(libc::SYS_getppid, a0, a1) };
    if rc < 0 { errno() } else { 0 }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("lrun-seccomp-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        if let Err(e) = std::fs::create_dir(&p) {
            panic!("create {}: {e}", p.display());
        }
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cstring(p: &std::path::Path) -> CString {
    match CString::new(p.as_os_str().as_encoded_bytes()) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn mkdir_is_denied_with_errno_ret() {
    let dir = TempDir::new("mkdir");
    let a = cstring(&dir.0.join("a"));
    let b = cstring(&dir.0.join("b"));
    let filter = compile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["mkdir"],"action":"SCMP_ACT_ERRNO"},
            {"names":["mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":18}]}"#,
    );
    let got = in_child(&filter, |_| {
        // SAFETY: valid C strings.
        let rc = unsafe { libc::syscall(libc::SYS_mkdir, a.as_ptr(), 0o755) };
        if rc == 0 { 0 } else { errno() }
    });
    assert_eq!(got, Outcome::Exited(libc::EPERM), "mkdir without errnoRet");
    let got = in_child(&filter, |_| {
        // SAFETY: valid C strings.
        let rc = unsafe { libc::syscall(libc::SYS_mkdirat, libc::AT_FDCWD, b.as_ptr(), 0o755) };
        if rc == 0 { 0 } else { errno() }
    });
    assert_eq!(
        got,
        Outcome::Exited(libc::EXDEV),
        "mkdirat with errnoRet 18"
    );
    assert!(!dir.0.join("a").exists() && !dir.0.join("b").exists());
}

#[test]
fn default_errno_applies_outside_the_allow_list() {
    let filter = compile(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":95,"syscalls":[
            {"names":["getpid","exit","exit_group"],"action":"SCMP_ACT_ALLOW"}]}"#,
    );
    let got = in_child(&filter, |_| {
        // SAFETY: plain syscalls.
        let pid = unsafe { libc::syscall(libc::SYS_getpid) };
        if pid <= 0 {
            return 1;
        }
        getppid_with(0, 0)
    });
    assert_eq!(got, Outcome::Exited(libc::EOPNOTSUPP));
}

#[test]
fn personality_query_allowed_but_changes_denied() {
    let filter = compile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["personality"],
            "action":"SCMP_ACT_ERRNO",
            "args":[{"index":0,"value":4294967295,"op":"SCMP_CMP_NE"}]}]}"#,
    );
    let got = in_child(&filter, |_| {
        // SAFETY: personality only changes this child.
        let query = unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffffu64) };
        if query < 0 {
            return 1;
        }
        // SAFETY: as above.
        let set = unsafe {
            libc::syscall(libc::SYS_personality, 0x0008u64 /* PER_LINUX32 */)
        };
        if set < 0 { errno() } else { 2 }
    });
    assert_eq!(got, Outcome::Exited(libc::EPERM));
}

#[test]
fn personality_masked_eq_denies_flag_bit() {
    let filter = compile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["personality"],
            "action":"SCMP_ACT_ERRNO","errnoRet":22,
            "args":[{"index":0,"value":4194304,"valueTwo":4194304,"op":"SCMP_CMP_MASKED_EQ"}]}]}"#,
    );
    let got = in_child(&filter, |_| {
        // SAFETY: personality only changes this child.
        let plain = unsafe { libc::syscall(libc::SYS_personality, 0u64) };
        if plain < 0 {
            return 1;
        }
        // READ_IMPLIES_EXEC (0x0400000) is the masked bit.
        // SAFETY: as above.
        let rie = unsafe { libc::syscall(libc::SYS_personality, 0x0400000u64) };
        if rie < 0 { errno() } else { 2 }
    });
    assert_eq!(got, Outcome::Exited(libc::EINVAL));
}

#[test]
fn every_comparison_operator_matches_as_specified() {
    // (op, value, valueTwo, an argument that matches, one that does not)
    let cases: &[(&str, u64, u64, u64, u64)] = &[
        ("SCMP_CMP_NE", 10, 0, 11, 10),
        ("SCMP_CMP_LT", 10, 0, 9, 10),
        ("SCMP_CMP_LE", 10, 0, 10, 11),
        ("SCMP_CMP_EQ", 10, 0, 10, 11),
        ("SCMP_CMP_GE", 10, 0, 10, 9),
        ("SCMP_CMP_GT", 10, 0, 11, 10),
        ("SCMP_CMP_GT", 1 << 32, 0, (1 << 32) + 1, 0xffff_ffff),
        ("SCMP_CMP_MASKED_EQ", 0xf0, 0x10, 0x1f, 0x2f),
    ];
    for &(op, value, value_two, hit, miss) in cases {
        let filter = compile(&format!(
            r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{{"names":["getppid"],
                "action":"SCMP_ACT_ERRNO","errnoRet":33,
                "args":[{{"index":0,"value":{value},"valueTwo":{value_two},"op":"{op}"}}]}}]}}"#
        ));
        let got = in_child(&filter, |_| {
            if getppid_with(hit, 0) != libc::EDOM {
                return 1;
            }
            if getppid_with(miss, 0) != 0 {
                return 2;
            }
            0
        });
        assert_eq!(
            got,
            Outcome::Exited(0),
            "{op} {value:#x}: 1 = hit not denied, 2 = miss denied"
        );
    }
}

#[test]
fn comparisons_on_one_arg_are_ored_on_distinct_args_anded() {
    let filter = compile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["getppid"],"action":"SCMP_ACT_ERRNO","args":[
                {"index":0,"value":1,"op":"SCMP_CMP_EQ"},{"index":0,"value":2,"op":"SCMP_CMP_EQ"}]},
            {"names":["getppid"],"action":"SCMP_ACT_ERRNO","args":[
                {"index":0,"value":7,"op":"SCMP_CMP_EQ"},{"index":1,"value":8,"op":"SCMP_CMP_EQ"}]}]}"#,
    );
    let got = in_child(&filter, |_| {
        let denied = |a0, a1| getppid_with(a0, a1) == libc::EPERM;
        let expect = [
            (denied(1, 0), true),
            (denied(2, 0), true),
            (denied(3, 0), false),
            (denied(7, 8), true),
            (denied(7, 9), false),
            (denied(6, 8), false),
        ];
        match expect.iter().position(|(got, want)| got != want) {
            Some(i) => 10 + i as i32,
            None => 0,
        }
    });
    assert_eq!(got, Outcome::Exited(0));
}

#[test]
fn kill_process_kills_with_sigsys() {
    for action in [
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_TRAP",
    ] {
        let filter = compile(&format!(
            r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{{"names":["getppid"],"action":"{action}"}}]}}"#
        ));
        let got = in_child(&filter, |_| {
            getppid_with(0, 0);
            0
        });
        assert_eq!(got, Outcome::Killed(Signal::SIGSYS), "{action}");
    }
}

#[test]
fn trace_without_tracer_fails_with_enosys_and_log_allows() {
    let filter = compile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["getppid"],"action":"SCMP_ACT_TRACE","errnoRet":5},
            {"names":["getpid"],"action":"SCMP_ACT_LOG"}]}"#,
    );
    let got = in_child(&filter, |_| {
        // SAFETY: plain syscall.
        if unsafe { libc::syscall(libc::SYS_getpid) } <= 0 {
            return 1;
        }
        getppid_with(0, 0)
    });
    assert_eq!(got, Outcome::Exited(libc::ENOSYS));
}

#[test]
fn unknown_syscall_name_is_skipped() {
    let with_unknown = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
        {"names":["lrun_no_such_syscall","getppid"],"action":"SCMP_ACT_ERRNO"}]}"#;
    let without = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
        {"names":["getppid"],"action":"SCMP_ACT_ERRNO"}]}"#;
    let filter = compile(with_unknown);
    assert_eq!(filter.program_words(), compile(without).program_words());
    let got = in_child(&filter, |_| getppid_with(0, 0));
    assert_eq!(got, Outcome::Exited(libc::EPERM));
}

#[test]
fn filter_flags_are_accepted_by_the_kernel() {
    for flag in [
        "SECCOMP_FILTER_FLAG_TSYNC",
        "SECCOMP_FILTER_FLAG_LOG",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
    ] {
        let filter = compile(&format!(
            r#"{{"defaultAction":"SCMP_ACT_ALLOW","flags":["{flag}"],
                "syscalls":[{{"names":["getppid"],"action":"SCMP_ACT_ERRNO"}}]}}"#
        ));
        assert!(!filter.has_listener());
        let got = in_child(&filter, |_| getppid_with(0, 0));
        assert_eq!(got, Outcome::Exited(libc::EPERM), "{flag}");
    }
}

#[test]
fn notify_listener_reaches_the_agent_and_receives_the_syscall() {
    let filter = compile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/agent.sock",
            "flags":["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV","SECCOMP_FILTER_FLAG_TSYNC"],
            "syscalls":[{"names":["getppid"],"action":"SCMP_ACT_NOTIFY"}]}"#,
    );
    assert!(filter.has_listener());
    let dir = TempDir::new("agent");
    let sock_path = dir.0.join("agent.sock");
    let agent = match std::os::unix::net::UnixListener::bind(&sock_path) {
        Ok(l) => l,
        Err(e) => panic!("bind {}: {e}", sock_path.display()),
    };
    let state = br#"{"ociVersion":"1.2.0","id":"c1","status":"creating","pid":0,"bundle":"/b"}"#;
    // SAFETY: the child loads the filter, sends the fd and leaves with _exit (glibc's malloc
    // is usable after fork, which send_listener needs).
    let child = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let code = match filter.load() {
                Ok(Some(listener)) => {
                    // SAFETY: plain syscall.
                    let pid = unsafe { libc::getpid() };
                    match send_listener(&sock_path, listener.as_fd(), pid, Some("meta"), state) {
                        // The agent answers EXDEV for us.
                        Ok(()) => getppid_with(0, 0),
                        Err(_) => 3,
                    }
                }
                Ok(None) => 2,
                Err(_) => LOAD_FAILED,
            };
            // SAFETY: leaving the child.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => panic!("fork: {e}"),
    };
    let (conn, _) = match agent.accept() {
        Ok(c) => c,
        Err(e) => panic!("accept: {e}"),
    };
    let (listener, payload) = receive_fd(&OwnedFd::from(conn));
    let msg: serde_json::Value = match serde_json::from_slice(&payload) {
        Ok(v) => v,
        Err(e) => panic!("agent message {:?}: {e}", String::from_utf8_lossy(&payload)),
    };
    assert_eq!(msg["fds"], serde_json::json!(["seccompFd"]), "{msg}");
    assert_eq!(msg["pid"], child.as_raw(), "{msg}");
    assert_eq!(msg["metadata"], "meta", "{msg}");
    assert_eq!(msg["state"]["id"], "c1", "{msg}");
    assert_eq!(msg["ociVersion"], "1.2.0", "{msg}");
    let req = match libseccomp::ScmpNotifReq::receive(listener.as_raw_fd()) {
        Ok(r) => r,
        Err(e) => panic!("notify receive: {e}"),
    };
    let getppid = ScmpSyscall::from_name("getppid").ok();
    assert_eq!(Some(req.data.syscall), getppid);
    let resp = libseccomp::ScmpNotifResp::new_error(
        req.id,
        -libc::EXDEV,
        libseccomp::ScmpNotifRespFlags::empty(),
    );
    if let Err(e) = resp.respond(listener.as_raw_fd()) {
        panic!("notify respond: {e}");
    }
    assert_eq!(wait(child), Outcome::Exited(libc::EXDEV));
}

/// Read one agent connection to its end: the fd from the first message, and all the bytes.
fn receive_fd(sock: &OwnedFd) -> (OwnedFd, Vec<u8>) {
    use std::os::fd::FromRawFd;
    let mut buf = vec![0u8; 64 * 1024];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = match nix::sys::socket::recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
    ) {
        Ok(m) => m,
        Err(e) => panic!("recvmsg: {e}"),
    };
    let n = msg.bytes;
    let mut fd = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c
                && let Some(&raw) = fds.first()
            {
                // SAFETY: SCM_RIGHTS gave this process a new fd nothing else owns.
                fd = Some(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
    }
    let mut payload = buf[..n].to_vec();
    let mut rest = std::fs::File::from(match sock.try_clone() {
        Ok(s) => s,
        Err(e) => panic!("dup: {e}"),
    });
    let _ = rest.read_to_end(&mut payload);
    match fd {
        Some(fd) => (fd, payload),
        None => panic!("no listener fd received"),
    }
}

/// Runs `busybox sh -c script` in a child with its own mount namespace (so that a mount that
/// the filter failed to stop would vanish with it), under `filter` if given. Returns the
/// outcome and what the script printed.
fn busybox(filter: Option<&Filter>, script: &str) -> (Outcome, String) {
    let argv: Vec<CString> = ["busybox", "sh", "-c", script]
        .iter()
        .map(|s| CString::new(*s).unwrap_or_default())
        .collect();
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let (read_end, write_end) = match nix::unistd::pipe() {
        Ok(p) => p,
        Err(e) => panic!("pipe: {e}"),
    };
    let allow_all = compile(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#);
    let filter = filter.unwrap_or(&allow_all);
    // SAFETY: the child makes only raw syscalls before execv or _exit.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            // SAFETY: raw syscalls on this child; the strings are static C literals.
            let code = unsafe {
                if libc::unshare(libc::CLONE_NEWNS) != 0
                    || libc::mount(
                        std::ptr::null(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) != 0
                    || libc::dup2(write_end.as_raw_fd(), 1) != 1
                {
                    101
                } else if filter.load().is_err() {
                    LOAD_FAILED
                } else {
                    libc::execv(c"/bin/busybox".as_ptr(), argv_ptrs.as_ptr());
                    102
                }
            };
            // SAFETY: leaving the child.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(write_end);
            let mut out = String::new();
            let _ = std::fs::File::from(read_end).read_to_string(&mut out);
            (wait(child), out)
        }
        Err(e) => panic!("fork: {e}"),
    }
}

#[test]
fn default_profile_runs_a_shell_but_denies_namespace_and_mount() {
    let dir = TempDir::new("default");
    let script = format!(
        "echo ok; ls / >/dev/null || exit 3; cat /proc/self/status | grep -q 'Seccomp:.2' || exit 6; \
         unshare -m true 2>/dev/null && exit 4; \
         mount -t tmpfs none {} 2>/dev/null && exit 5; exit 0",
        dir.0.display()
    );
    let filter = compile(DEFAULT_PROFILE);
    let (got, out) = busybox(Some(&filter), &script);
    assert_eq!(got, Outcome::Exited(0), "output: {out}");
    assert_eq!(out, "ok\n");
    // Without the filter the same script gets to the unshare and succeeds there: the denial
    // above came from the profile, not from the machine.
    let (got, _) = busybox(None, &script.replace("|| exit 6", "|| true"));
    assert_eq!(got, Outcome::Exited(4));
}

#[test]
fn default_profile_compiles_within_the_kernel_limit_and_fast() {
    let profile = parse(DEFAULT_PROFILE);
    let start = Instant::now();
    let filter = match prepare(&profile) {
        Ok(f) => f,
        Err(e) => panic!("{e:#}"),
    };
    let took = start.elapsed();
    eprintln!(
        "default profile: {} instructions, prepared in {took:?}",
        filter.len()
    );
    assert!(filter.len() > 100 && filter.len() <= MAX_INSTRUCTIONS);
}

#[test]
fn architectures_this_host_cannot_run_are_skipped() {
    // s390x is big-endian (libseccomp will not mix it with x86-64), SuperH unknown to 2.5.
    let foreign = compile(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_S390X","SCMP_ARCH_SHEB"],
            "syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#,
    );
    let native = compile(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],
            "syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#,
    );
    assert_eq!(foreign.program_words(), native.program_words());
}

#[test]
fn decode_rejects_partial_instructions() {
    assert!(decode(&[0u8; 12]).is_err());
    assert!(decode(&[]).is_err());
    let one = decode(&[6, 0, 0, 0, 0, 0, 0xff, 0x7f]).ok();
    assert_eq!(one.map(|v| (v[0].code, v[0].k)), Some((6, 0x7fff_0000)));
}

#[test]
fn cached_filter_matches_a_fresh_compile_and_is_keyed_by_profile() {
    let dir = TempDir::new("cache");
    let cache = dir.0.join("seccomp");
    let a = parse(DEFAULT_PROFILE);
    let mut b = a.clone();
    b.set_default_errno_ret(Some(38));
    let fresh = |s: &LinuxSeccomp| match prepare(s) {
        Ok(f) => f.program_words(),
        Err(e) => panic!("{e:#}"),
    };
    let cached = |s: &LinuxSeccomp| match prepare_cached(s, &cache) {
        Ok(f) => f.program_words(),
        Err(e) => panic!("{e:#}"),
    };
    // miss, then hit, for two profiles sharing one directory
    for _ in 0..2 {
        assert_eq!(cached(&a), fresh(&a));
        assert_eq!(cached(&b), fresh(&b));
    }
    assert_ne!(fresh(&a), fresh(&b));
    let files = std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
    assert_eq!(files, 2);
}

#[test]
fn corrupt_cache_file_is_recompiled() {
    let dir = TempDir::new("cache-corrupt");
    let profile = parse(DEFAULT_PROFILE);
    let first = prepare_cached(&profile, &dir.0)
        .map(|f| f.program_words())
        .ok();
    for entry in std::fs::read_dir(&dir.0).into_iter().flatten().flatten() {
        let _ = std::fs::write(entry.path(), b"lrunbpf1garbage");
    }
    let second = prepare_cached(&profile, &dir.0)
        .map(|f| f.program_words())
        .ok();
    assert!(first.is_some());
    assert_eq!(first, second);
}

#[test]
#[ignore = "measurement"]
fn measure_prepare() {
    let dir = TempDir::new("measure");
    let profile = parse(DEFAULT_PROFILE);
    for round in 0..5 {
        let start = Instant::now();
        let f = prepare(&profile).ok();
        let compile = start.elapsed();
        let start = Instant::now();
        let c = prepare_cached(&profile, &dir.0).ok();
        let cached = start.elapsed();
        let filter = f.unwrap_or_else(|| panic!("prepare failed"));
        assert!(c.is_some());
        // SAFETY: the child only loads the filter and exits.
        let load = match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                let start = Instant::now();
                let ok = filter.load().is_ok();
                let us = (start.elapsed().as_micros() / 10).min(250) as i32;
                // SAFETY: leaving the child.
                unsafe { libc::_exit(if ok { us } else { 255 }) }
            }
            Ok(ForkResult::Parent { child }) => wait(child),
            Err(e) => panic!("fork: {e}"),
        };
        eprintln!(
            "round {round}: compile {compile:?}, prepare_cached {cached:?}, load {load:?}0 us, {} insns, key {:?}",
            filter.len(),
            {
                let t = Instant::now();
                let _ = cache::key(&profile);
                t.elapsed()
            }
        );
    }
}

#[test]
fn libseccomp_program_starts_by_loading_the_architecture() {
    let bytes = match build(&parse(DEFAULT_PROFILE)).and_then(|(c, _)| export(&c)) {
        Ok(b) => b,
        Err(e) => panic!("{e:#}"),
    };
    let first = decode(&bytes)
        .ok()
        .and_then(|p| p.first().map(|i| (i.code, i.k)));
    // BPF_LD | BPF_W | BPF_ABS of seccomp_data.arch
    assert_eq!(first, Some((0x20, 4)));
}

#[test]
fn syscalls_newer_than_the_profile_get_enosys() {
    let filter = compile(DEFAULT_PROFILE);
    let got = in_child(&filter, |_| {
        // SAFETY: syscalls that either do not exist or fail on their arguments.
        let new = unsafe { libc::syscall(1000, 0, 0, 0) };
        let new_errno = errno();
        // io_uring_setup (425) is older than clone3 (435) and not allowed: the default errno.
        let old = unsafe { libc::syscall(libc::SYS_io_uring_setup, 0, 0) };
        let old_errno = errno();
        match (new, new_errno, old, old_errno) {
            (-1, libc::ENOSYS, -1, libc::EPERM) => 0,
            (_, libc::ENOSYS, ..) => 2,
            _ => 1,
        }
    });
    assert_eq!(
        got,
        Outcome::Exited(0),
        "1: new syscall not ENOSYS, 2: old not EPERM"
    );
    let prologue = encode(&enosys::prologue(&parse(DEFAULT_PROFILE), &[]));
    assert_eq!(encode(&decode(&prologue).unwrap_or_default()), prologue);
}
