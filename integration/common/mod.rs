//! Shared harness for integration tests: a busybox-static rootfs, bundles made from
//! `lrun spec`, a private state root per test, and leak checks when a test ends.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

pub const LRUN: &str = env!("CARGO_BIN_EXE_lrun");

/// The lrun binary, with idle layer mounts off: a delete then unmounts the layers it was the
/// last user of, which the tests check (tests of idle layers set their own policy).
pub fn lrun_command() -> Command {
    let mut c = Command::new(LRUN);
    c.env("LRUN_LAYER_IDLE_TIMEOUT", "0");
    c
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A busybox-static root filesystem shared (read-only) by the tests of one test binary.
pub fn rootfs() -> &'static Path {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        // Built once per checkout and reused: cargo's scratch space for integration tests.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("busybox-rootfs");
        if !dir.join("bin/sh").exists() {
            let tmp = dir.with_extension(format!("tmp{}", std::process::id()));
            make_busybox_rootfs(&tmp);
            let _ = fs::rename(&tmp, &dir);
            let _ = fs::remove_dir_all(&tmp);
        }
        dir
    })
}

pub fn make_busybox_rootfs(dir: &Path) {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static is required (apt-get install busybox-static)");
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc", "root", "mnt"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    let list = Command::new(busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet));
    }
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    )
    .unwrap();
    fs::write(dir.join("etc/group"), "root:x:0:\nnobody:x:65534:\n").unwrap();
}

/// One test's world: its own state root and scratch directory, checked for leaks on drop.
pub struct Env {
    pub root: PathBuf,
    pub scratch: PathBuf,
    pub ids: Vec<String>,
}

impl Env {
    pub fn new() -> Env {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let base = std::env::temp_dir().join(format!("lrun-it-{}-{n}", std::process::id()));
        let root = base.join("state");
        let scratch = base.join("scratch");
        fs::create_dir_all(&scratch).unwrap();
        Env {
            root,
            scratch,
            ids: Vec::new(),
        }
    }

    /// A fresh container id, remembered for the leak check.
    pub fn id(&mut self, name: &str) -> String {
        let id = format!(
            "lrt-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        self.ids.push(id.clone());
        id
    }

    pub fn lrun(&self) -> Command {
        let mut c = lrun_command();
        c.arg("--root").arg(&self.root);
        c
    }

    /// Run lrun with captured output (only for commands that leave no process behind).
    pub fn out(&self, args: &[&str]) -> Output {
        self.lrun()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run lrun")
    }

    /// Run lrun with stdio detached (create leaves an init holding its stdio open).
    pub fn quiet(&self, args: &[&str]) -> (bool, String) {
        let (code, err) = self.quiet_code(args);
        (code == 0, err)
    }

    /// As `quiet`, with the exit code (-1 for a signal).
    pub fn quiet_code(&self, args: &[&str]) -> (i32, String) {
        let log = self.scratch.join("quiet.err");
        let err = fs::File::create(&log).unwrap();
        let st = self
            .lrun()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .status()
            .unwrap();
        (
            st.code().unwrap_or(-1),
            fs::read_to_string(&log).unwrap_or_default(),
        )
    }

    pub fn bundle(&self, name: &str, args: &[&str]) -> Bundle {
        let dir = self
            .scratch
            .join(format!("{name}-{}", COUNTER.fetch_add(1, Ordering::SeqCst)));
        fs::create_dir_all(&dir).unwrap();
        let out = Command::new(LRUN)
            .args(["spec", "--bundle"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "lrun spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut config: Value =
            serde_json::from_slice(&fs::read(dir.join("config.json")).unwrap()).unwrap();
        config["root"]["path"] = json!(rootfs());
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(args);
        Bundle { dir, config }
    }

    pub fn state(&self, id: &str) -> Value {
        let out = self.out(&["state", id]);
        assert!(
            out.status.success(),
            "state {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"].as_str().unwrap().to_string()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = self
                .lrun()
                .args(["delete", "--force", id])
                .stderr(Stdio::null())
                .status();
        }
        // Idle layer mounts a test kept on purpose (its own idle policy).
        if self.root.join("@layers").exists() {
            let _ = self
                .lrun()
                .args(["gc", "--drop-idle"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if std::thread::panicking() {
            return;
        }
        assert_no_leaks(&self.root, &self.ids);
        let _ = fs::remove_dir_all(self.root.parent().unwrap());
    }
}

/// Nothing of lrun's may remain: no container state, no mount below the test's directories,
/// no cgroup named after one of its containers.
pub fn assert_no_leaks(root: &Path, ids: &[String]) {
    let left: Vec<_> = fs::read_dir(root)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    let left: Vec<_> = left.into_iter().filter(|n| n != ".seccomp-cache").collect();
    assert!(
        left.is_empty(),
        "state left in {}: {left:?}",
        root.display()
    );
    // With the slash: lrun-it-PID-1 must not match the mounts of lrun-it-PID-10.
    let base = format!("{}/", root.parent().unwrap().to_string_lossy());
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let leaked: Vec<_> = mounts.lines().filter(|l| l.contains(&base)).collect();
    assert!(leaked.is_empty(), "mounts left: {leaked:#?}");
    for id in ids {
        let found = Command::new("find")
            .args([
                "/sys/fs/cgroup",
                "-maxdepth",
                "6",
                "-type",
                "d",
                "-name",
                id,
            ])
            .output()
            .unwrap();
        assert!(
            found.stdout.is_empty(),
            "cgroups left for {id}: {}",
            String::from_utf8_lossy(&found.stdout)
        );
    }
}

pub struct Bundle {
    pub dir: PathBuf,
    pub config: Value,
}

impl Bundle {
    pub fn write(&self) -> &Path {
        fs::write(
            self.dir.join("config.json"),
            serde_json::to_vec_pretty(&self.config).unwrap(),
        )
        .unwrap();
        &self.dir
    }

    pub fn path(&self) -> &str {
        self.dir.to_str().unwrap()
    }
}

/// `lrun run` in the foreground: (exit code, stdout, stderr).
pub fn run(env: &mut Env, b: &Bundle) -> (i32, String, String) {
    b.write();
    let id = env.id("run");
    let out = env.out(&["run", "--bundle", b.path(), &id]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run a shell snippet in a default container and return its stdout; panics on failure.
pub fn sh(env: &mut Env, f: impl FnOnce(&mut Bundle), script: &str) -> String {
    let mut b = env.bundle("sh", &["sh", "-c", script]);
    f(&mut b);
    let (code, out, err) = run(env, &b);
    assert_eq!(
        code, 0,
        "script failed: {script}\nstdout: {out}\nstderr: {err}"
    );
    out
}

/// lrun with this test's state root and the given layer store; output captured (only for
/// commands that leave no process holding stdio).
pub fn lrun_with(env: &Env, store: &Path, args: &[&str]) -> Output {
    env.lrun()
        .arg("--store")
        .arg(store)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run lrun")
}

/// `lrun layer pack TREE --name NAME --version 1` with these dependencies, into the scratch
/// directory; returns the image's path.
pub fn pack_tree(env: &Env, tree: &Path, name: &str, deps: &[&Path]) -> PathBuf {
    let out = env.scratch.join(format!("{name}.lrl"));
    pack_as(env, tree, name, "1", deps, &out);
    out
}

/// `lrun layer pack TREE --name NAME --version VERSION -o OUT` with these dependencies.
pub fn pack_as(env: &Env, tree: &Path, name: &str, version: &str, deps: &[&Path], out: &Path) {
    let mut args = vec![
        "layer",
        "pack",
        tree.to_str().unwrap(),
        "--name",
        name,
        "--version",
        version,
        "-o",
        out.to_str().unwrap(),
    ];
    for d in deps {
        args.extend(["--dep", d.to_str().unwrap()]);
    }
    ok(&lrun_with(env, &env.scratch.join("unused-store"), &args));
}

/// The stdout of a command that must have succeeded.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "lrun failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Read one message and the fd sent with it (SCM_RIGHTS) from a unix stream: what a console
/// socket or a seccomp agent receives.
pub fn recv_with_fd(
    conn: &std::os::unix::net::UnixStream,
) -> (Vec<u8>, Option<std::os::fd::OwnedFd>) {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    let mut buf = vec![0u8; 64 * 1024];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .unwrap();
    let mut fd = None;
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel just gave us this fd.
            fd = fds.first().map(|&f| unsafe { OwnedFd::from_raw_fd(f) });
        }
    }
    let n = msg.bytes;
    buf.truncate(n);
    (buf, fd)
}
