//! Security tests: see integration/security.rs. Mounts, masked paths, devices and the root
//! filesystem: each test makes its own rootfs copy when the attack needs to change the image.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{Env, make_busybox_rootfs, run};

/// A private copy of the busybox rootfs the test may change.
fn own_rootfs(env: &Env) -> PathBuf {
    let rootfs = env.scratch.join("rootfs");
    make_busybox_rootfs(&rootfs);
    rootfs
}

fn push_mount(b: &mut crate::common::Bundle, m: serde_json::Value) {
    b.config["mounts"].as_array_mut().unwrap().push(m);
}

/// A co-tenant of a shared volume: swaps `a` and `b` (a directory and a symlink) with
/// RENAME_EXCHANGE as fast as it can until dropped, as the CVE-2021-30465 exploit does.
struct Swapper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Swapper {
    fn start(pairs: Vec<(PathBuf, PathBuf)>) -> Swapper {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) {
                for (a, b) in &pairs {
                    let _ = nix::fcntl::renameat2(
                        nix::fcntl::AT_FDCWD,
                        a.as_path(),
                        nix::fcntl::AT_FDCWD,
                        b.as_path(),
                        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                    );
                    n += 1;
                }
            }
            n
        });
        Swapper {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Finding 4: bind flags applied by a second path walk went to whatever a co-tenant had
/// swapped in meanwhile (`/sys` came out read-write, a read-only volume writable).
#[test]
fn mount_flags_reach_the_mount_made_while_a_cotenant_swaps_the_path() {
    let mut env = Env::new();
    let vol = env.scratch.join("vol");
    let ro_src = env.scratch.join("ro-src");
    let rw_src = env.scratch.join("rw-src");
    for d in [&vol, &ro_src, &rw_src] {
        fs::create_dir_all(d).unwrap();
    }
    for name in ["x", "y"] {
        fs::create_dir(vol.join(name)).unwrap();
        symlink("/sys", vol.join(format!("{name}-link"))).unwrap();
    }
    let swapper = Swapper::start(vec![
        (vol.join("x"), vol.join("x-link")),
        (vol.join("y"), vol.join("y-link")),
    ]);
    // Inside: is sysfs writable, and can a file be made in the read-only bind?
    let script = "grep -q '^sysfs /sys sysfs rw' /proc/mounts && echo SYSFS-RW; \
                  for d in /vol/x /vol/x-link; do touch $d/probe 2>/dev/null; done; echo done";
    let (mut ok, mut failed) = (0, 0);
    let started = Instant::now();
    for _ in 0..150 {
        if started.elapsed() > Duration::from_secs(45) {
            break;
        }
        let mut b = env.bundle("swap", &["sh", "-c", script]);
        push_mount(
            &mut b,
            json!({"destination": "/vol", "type": "bind", "source": vol, "options": ["rbind"]}),
        );
        push_mount(
            &mut b,
            json!({"destination": "/vol/x", "type": "bind", "source": ro_src, "options": ["bind", "ro"]}),
        );
        push_mount(
            &mut b,
            json!({"destination": "/vol/y", "type": "bind", "source": rw_src, "options": ["bind", "rw", "nosuid"]}),
        );
        let (code, out, err) = run(&mut env, &b);
        assert!(
            !out.contains("SYSFS-RW"),
            "sysfs came out read-write: {out}{err}"
        );
        assert!(
            fs::read_dir(&ro_src).unwrap().next().is_none(),
            "the read-only bind was writable"
        );
        if code == 0 {
            ok += 1;
        } else {
            failed += 1;
        }
    }
    drop(swapper);
    println!("{ok} runs succeeded, {failed} failed cleanly");
    assert!(ok > 0, "no run succeeded: the test proved nothing");
}

/// CVE-2021-30465 / CVE-2024-45310: a path component swapped for a symlink out of the rootfs
/// while mount points are created must not make lrun create or mount anything outside.
#[test]
fn mount_points_are_never_created_outside_the_rootfs_during_a_swap() {
    let mut env = Env::new();
    let rootfs = own_rootfs(&env);
    let vol = env.scratch.join("vol");
    let outside = env.scratch.join("outside");
    fs::create_dir_all(&vol).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::create_dir(vol.join("z")).unwrap();
    symlink(&outside, vol.join("z-abs")).unwrap();
    fs::create_dir(vol.join("w")).unwrap();
    symlink(
        format!("../../../../../../../../..{}", outside.display()),
        vol.join("w-rel"),
    )
    .unwrap();
    let swapper = Swapper::start(vec![
        (vol.join("z"), vol.join("z-abs")),
        (vol.join("w"), vol.join("w-rel")),
    ]);
    let started = Instant::now();
    let mut ok = 0;
    for _ in 0..100 {
        if started.elapsed() > Duration::from_secs(30) {
            break;
        }
        let mut b = env.bundle("escape", &["true"]);
        b.config["root"]["path"] = json!(rootfs);
        push_mount(
            &mut b,
            json!({"destination": "/vol", "type": "bind", "source": vol, "options": ["rbind"]}),
        );
        push_mount(
            &mut b,
            json!({"destination": "/vol/z/sub/dir", "type": "tmpfs", "source": "tmpfs"}),
        );
        push_mount(
            &mut b,
            json!({"destination": "/vol/w/file", "type": "bind", "source": "/etc/hostname", "options": ["bind", "ro"]}),
        );
        let (code, _, _) = run(&mut env, &b);
        ok += (code == 0) as u32;
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(outside.to_str().unwrap()),
            "a mount landed outside the rootfs"
        );
        assert!(
            fs::read_dir(&outside).unwrap().next().is_none(),
            "lrun created something outside the rootfs"
        );
    }
    drop(swapper);
    assert!(ok > 0, "no run succeeded: the test proved nothing");
}

/// Finding 3 (CVE-2025-31133): an image whose /dev/null is a symlink (here into the
/// container's own uts namespace sysctl) must not turn a masked path into a writable view of
/// what it names.
#[test]
fn masked_paths_are_not_bound_from_an_image_dev_null_symlink() {
    let mut env = Env::new();
    let rootfs = own_rootfs(&env);
    fs::create_dir_all(rootfs.join("dev")).unwrap();
    symlink("/proc/sys/kernel/domainname", rootfs.join("dev/null")).unwrap();
    let mut b = env.bundle(
        "devnull",
        &[
            "sh",
            "-c",
            "echo pwned > /proc/keys; cat /proc/sys/kernel/domainname",
        ],
    );
    b.config["root"]["path"] = json!(rootfs);
    // No fresh /dev: the image's /dev is what the runtime sees.
    b.config["mounts"]
        .as_array_mut()
        .unwrap()
        .retain(|m| !m["destination"].as_str().unwrap().starts_with("/dev"));
    let (code, out, err) = run(&mut env, &b);
    assert!(
        !out.contains("pwned"),
        "the masked /proc/keys wrote the domainname: {out}"
    );
    assert_ne!(code, 0, "expected a refusal, got: {out}");
    assert!(err.contains("/dev/null"), "unclear error: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

/// Finding 12: `..` in a destination is cleaned lexically first, as runc and crun do.
#[test]
fn mount_destinations_are_cleaned_lexically() {
    let mut env = Env::new();
    let rootfs = own_rootfs(&env);
    let mut b = env.bundle(
        "clean",
        &["sh", "-c", "cut -d' ' -f2 /proc/mounts | grep dd"],
    );
    b.config["root"]["path"] = json!(rootfs);
    push_mount(
        &mut b,
        json!({"destination": "/mnt/../opt/dd", "type": "tmpfs", "source": "tmpfs"}),
    );
    let (code, out, err) = run(&mut env, &b);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "/opt/dd\n");
    assert!(!rootfs.join("mnt/opt").exists());
}

/// Finding 16: a device listed in linux.devices is not added to the device cgroup: with a
/// deny-all rule the container cannot open it (runc keeps it denied too). /dev/fuse is
/// harmless to open: without a mount nothing reads the connection, closing ends it.
#[test]
fn listed_devices_stay_denied_by_a_deny_all_rule() {
    if !Path::new("/dev/fuse").exists() {
        lrun::test_support::skip("no /dev/fuse on this machine");
        return;
    }
    let mut env = Env::new();
    let mut b = env.bundle(
        "devdeny",
        &[
            "sh",
            "-c",
            "test -c /dev/fuse && echo present; (exec 3<>/dev/fuse) 2>/dev/null && echo OPENED; echo done",
        ],
    );
    b.config["linux"]["devices"] =
        json!([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o666}]);
    b.config["linux"]["resources"] = json!({"devices": [{"allow": false, "access": "rwm"}]});
    let (code, out, err) = run(&mut env, &b);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "present\ndone\n", "the listed device was usable");
}

/// Finding 17: with --no-pivot the host's /proc must not stay in the mount namespace, or a
/// new user namespace may mount proc again without the masked paths. The process is not
/// root: mapping root to root would need CAP_SETFCAP, mapping uid 1000 needs nothing.
#[test]
fn no_pivot_leaves_no_procfs_to_mount_again() {
    let mut env = Env::new();
    let mut b = env.bundle(
        "nopivot",
        &[
            "sh",
            "-c",
            "unshare -mrpf sh -c 'mount -t proc none /proc && echo MOUNTED-PROC' 2>/dev/null; \
             wc -c < /proc/keys",
        ],
    );
    b.config["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    b.write();
    let id = env.id("nopivot");
    let out = env.out(&["run", "--no-pivot", "--bundle", b.path(), &id]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains("MOUNTED-PROC"),
        "proc mounted again: {stdout}"
    );
    assert_eq!(stdout.trim(), "0", "/proc/keys not masked: {stdout}");
}

/// A tmpfs mounted by the test on the host, unmounted when dropped.
struct HostTmpfs(PathBuf);

impl HostTmpfs {
    fn mount(at: &Path) -> HostTmpfs {
        fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                "size=1m",
                "lrun-test",
                at.to_str().unwrap(),
            ])
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", at.display());
        HostTmpfs(at.to_path_buf())
    }
}

impl Drop for HostTmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Finding 18: `rro` makes a bind and every submount read-only.
#[test]
fn rro_makes_a_bind_and_its_submounts_read_only() {
    let mut env = Env::new();
    let data = env.scratch.join("data");
    let sub = HostTmpfs::mount(&data.join("sub"));
    let mut b = env.bundle(
        "rro",
        &[
            "sh",
            "-c",
            "touch /data/a 2>/dev/null && echo TOP-RW; touch /data/sub/b 2>/dev/null && echo SUB-RW; \
             grep -c ' /data' /proc/mounts",
        ],
    );
    push_mount(
        &mut b,
        json!({"destination": "/data", "type": "bind", "source": data, "options": ["rbind", "rro"]}),
    );
    let (code, out, err) = run(&mut env, &b);
    drop(sub);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "2\n", "a bind or a submount stayed writable");
}

/// Finding 18: an option lrun does not implement on a bind is refused at create, by name,
/// in one line, and nothing is left behind (Env checks state, mounts and cgroups).
#[test]
fn unknown_bind_options_are_refused_at_create() {
    let mut env = Env::new();
    let mut b = env.bundle("badopt", &["true"]);
    push_mount(
        &mut b,
        json!({"destination": "/data", "type": "bind", "source": env.scratch, "options": ["rbind", "rrro"]}),
    );
    b.write();
    let id = env.id("badopt");
    let (ok, err) = env.quiet(&["create", "--bundle", b.path(), &id]);
    assert!(!ok, "create accepted an unknown option");
    assert!(
        err.contains("\"rrro\"") && err.contains("/data"),
        "error does not name the option and the mount: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

/// CVE-2019-19921 / CVE-2023-27561: a mount whose destination resolves into /proc (here a
/// symlink in the image) cannot cover the container's procfs and so skip the masked paths.
#[test]
fn a_mount_cannot_cover_proc_through_a_symlink() {
    let mut env = Env::new();
    let rootfs = own_rootfs(&env);
    symlink("/proc", rootfs.join("plink")).unwrap();
    let fake = env.scratch.join("fake-proc");
    fs::create_dir_all(&fake).unwrap();
    let mut b = env.bundle(
        "proclink",
        &["sh", "-c", "test -e /proc/kcore || echo UNMASKED"],
    );
    b.config["root"]["path"] = json!(rootfs);
    push_mount(
        &mut b,
        json!({"destination": "/plink", "type": "bind", "source": fake, "options": ["rbind"]}),
    );
    let (code, out, err) = run(&mut env, &b);
    assert!(!out.contains("UNMASKED"), "procfs was covered: {out}");
    assert_ne!(code, 0, "expected a refusal");
    assert!(err.contains("procfs"), "unclear error: {err}");
}

/// Finding 18 (tmpcopyup): the new tmpfs starts with a copy of the image directory it
/// covers; the image's symlinks are copied as symlinks, never followed out of the rootfs.
#[test]
fn tmpcopyup_copies_the_image_directory_without_following_symlinks() {
    let mut env = Env::new();
    let rootfs = own_rootfs(&env);
    let secret = env.scratch.join("outside-secret");
    fs::write(&secret, "host file\n").unwrap();
    fs::create_dir_all(rootfs.join("etc/sub/dir")).unwrap();
    fs::write(rootfs.join("etc/sub/dir/file"), "deep\n").unwrap();
    fs::set_permissions(
        rootfs.join("etc/sub/dir/file"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    symlink(&secret, rootfs.join("etc/link")).unwrap();
    let mut b = env.bundle(
        "copyup",
        &[
            "sh",
            "-c",
            "head -1 /etc/passwd; cat /etc/sub/dir/file; stat -c %a /etc/sub/dir/file; \
             readlink /etc/link; echo new > /etc/new && grep -c tmpfs /proc/mounts >/dev/null && echo written",
        ],
    );
    b.config["root"]["path"] = json!(rootfs);
    push_mount(
        &mut b,
        json!({"destination": "/etc", "type": "tmpfs", "source": "tmpfs", "options": ["tmpcopyup", "mode=755"]}),
    );
    let (code, out, err) = run(&mut env, &b);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!(
            "root:x:0:0:root:/root:/bin/sh\ndeep\n640\n{}\nwritten\n",
            secret.display()
        )
    );
    assert!(
        !rootfs.join("etc/new").exists(),
        "written to the image, not the tmpfs"
    );
    assert_eq!(fs::read_to_string(&secret).unwrap(), "host file\n");
}

/// CVE-2026-41579 class: an image whose `/dev` is a symlink out of the root (absolute, and
/// `../..`), with no fresh /dev mount. Device nodes, the /dev symlinks (fd, stdin, ptmx, ...)
/// and mount points under /dev must land inside the rootfs; the outside directory the links
/// point at stays empty.
#[test]
fn image_dev_symlink_leads_nothing_outside_the_rootfs() {
    let mut env = Env::new();
    let outside = env.scratch.join("outside");
    fs::create_dir_all(&outside).unwrap();
    for (name, target) in [
        ("abs", outside.to_str().unwrap().to_string()),
        (
            "rel",
            "../../../../../../../../..".to_string() + outside.to_str().unwrap(),
        ),
    ] {
        let rootfs = env.scratch.join(format!("rootfs-{name}"));
        make_busybox_rootfs(&rootfs);
        fs::remove_dir_all(rootfs.join("dev")).unwrap();
        symlink(&target, rootfs.join("dev")).unwrap();
        let mut b = env.bundle("devlink", &["sh", "-c", "ls /dev/ >/dev/null; echo ran"]);
        b.config["root"]["path"] = json!(rootfs);
        b.config["process"]["terminal"] = json!(false);
        b.config["mounts"]
            .as_array_mut()
            .unwrap()
            .retain(|m| m["destination"] != "/dev");
        let (code, out, err) = run(&mut env, &b);
        // lrun may refuse the image (a dangling /dev inside the root) but never follows it out.
        assert!(
            (code == 0 && out == "ran\n") || (code != 0 && err.contains("/dev")),
            "{name}: {code} {out} {err}"
        );
        let left: Vec<_> = fs::read_dir(&outside)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(
            left.is_empty(),
            "{name}: created outside the rootfs: {left:?}"
        );
    }
}
