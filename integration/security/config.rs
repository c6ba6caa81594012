//! Security tests: see integration/security.rs.
//!
//! config.json fields that reach the host: linux.sysctl (global keys, keys of a namespace the
//! container shares, writes redirected by a mount over /proc/sys).

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

use crate::common::{Bundle, Env, lrun_with, ok, run};

/// The host's current value of a sysctl (read only: tests never write the host's).
fn host_sysctl(path: &str) -> String {
    fs::read_to_string(format!("/proc/sys/{path}"))
        .unwrap()
        .trim_end()
        .to_string()
}

/// `create` must fail with one line naming `key`, and leave no state behind.
fn assert_refused_at_create(env: &mut Env, b: &Bundle, key: &str) {
    b.write();
    let id = env.id("sysctl");
    let (ok, err) = env.quiet(&["create", "--bundle", b.path(), &id]);
    assert!(!ok, "create accepted linux.sysctl {key}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {err}");
    assert!(lines[0].contains(key), "the error must name {key}: {err}");
    assert!(!env.root.join(&id).exists(), "state left for {id}");
}

fn without_namespace(b: &mut Bundle, typ: &str) {
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != typ);
}

// Each refused sysctl is given the host's current value: were it written (the bug), the host
// would not change.

#[test]
fn global_sysctl_core_pattern_is_refused_at_create() {
    let mut env = Env::new();
    let before = host_sysctl("kernel/core_pattern");
    let mut b = env.bundle("core", &["true"]);
    b.config["linux"]["sysctl"] = json!({"kernel.core_pattern": before});
    assert_refused_at_create(&mut env, &b, "kernel.core_pattern");
    // The same key with '/' separators.
    b.config["linux"]["sysctl"] = json!({"kernel/core_pattern": before});
    assert_refused_at_create(&mut env, &b, "kernel/core_pattern");
    // A namespaced prefix that climbs out.
    b.config["linux"]["sysctl"] = json!({"net/../kernel/core_pattern": before});
    assert_refused_at_create(&mut env, &b, "net/../kernel/core_pattern");
    assert_eq!(host_sysctl("kernel/core_pattern"), before);
}

#[test]
fn domainname_sysctl_without_uts_namespace_is_refused_at_create() {
    let mut env = Env::new();
    let before = host_sysctl("kernel/domainname");
    let mut b = env.bundle("domain", &["true"]);
    without_namespace(&mut b, "uts");
    b.config.as_object_mut().unwrap().remove("hostname");
    b.config["linux"]["sysctl"] = json!({"kernel.domainname": before});
    assert_refused_at_create(&mut env, &b, "kernel.domainname");
    assert_eq!(host_sysctl("kernel/domainname"), before);
}

#[test]
fn net_sysctl_without_own_net_namespace_is_refused_at_create() {
    let mut env = Env::new();
    let before = host_sysctl("net/ipv4/ip_forward");
    let mut b = env.bundle("net", &["true"]);
    without_namespace(&mut b, "network");
    b.config["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": before});
    assert_refused_at_create(&mut env, &b, "net.ipv4.ip_forward");
    // Joining the host's own network namespace by path is no namespace of the container's.
    let host_net = format!("/proc/{}/ns/net", std::process::id());
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "network", "path": host_net}));
    assert_refused_at_create(&mut env, &b, "net.ipv4.ip_forward");
    // Nor is the host's ipc namespace for an ipc sysctl.
    let mut b = env.bundle("ipc", &["true"]);
    without_namespace(&mut b, "ipc");
    let shmmax = host_sysctl("kernel/shmmax");
    b.config["linux"]["sysctl"] = json!({"kernel.shmmax": shmmax});
    assert_refused_at_create(&mut env, &b, "kernel.shmmax");
    assert_eq!(host_sysctl("net/ipv4/ip_forward"), before);
    assert_eq!(host_sysctl("kernel/shmmax"), shmmax);
}

#[test]
fn namespaced_sysctls_apply_inside_the_container() {
    let mut env = Env::new();
    let mut b = env.bundle(
        "ok",
        &[
            "sh",
            "-c",
            "cat /proc/sys/kernel/shmmax /proc/sys/net/ipv4/ip_forward",
        ],
    );
    b.config["linux"]["sysctl"] = json!({"kernel.shmmax": "12345678", "net/ipv4/ip_forward": "1"});
    let (code, out, err) = run(&mut env, &b);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "12345678\n1\n");
}

/// CVE-2025-52881 class: a config mount over /proc/sys/kernel/shmmax must not turn the
/// sysctl write into a write to the mounted file (here a scratch file of the test's).
#[test]
fn sysctl_write_is_not_redirected_by_a_mount_over_proc_sys() {
    let mut env = Env::new();
    let decoy = env.scratch.join("decoy");
    fs::write(&decoy, "untouched\n").unwrap();
    let mut b = env.bundle("redirect", &["cat", "/proc/sys/kernel/shmmax"]);
    b.config["linux"]["readonlyPaths"] = json!([]);
    b.config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/proc/sys/kernel/shmmax", "type": "bind",
        "source": decoy, "options": ["bind"]
    }));
    b.config["linux"]["sysctl"] = json!({"kernel.shmmax": "7654321"});
    let (code, out, err) = run(&mut env, &b);
    assert_eq!(
        fs::read_to_string(&decoy).unwrap(),
        "untouched\n",
        "the sysctl was written through the mount: {out}{err}"
    );
    // Either refused or written to the real sysctl; the container still sees its mount.
    if code == 0 {
        assert_eq!(out, "untouched\n");
    }
}

// ---- a `create` killed half-way: delete --force and gc recover it ----

/// The store the layered tests use (removed with the test's scratch directory).
fn store(env: &Env) -> std::path::PathBuf {
    env.scratch.join("store")
}

/// busybox@1 (the shared busybox rootfs) packed and added to the test's store.
fn busybox_layer(env: &Env) {
    let img = env.scratch.join("busybox.lrl");
    let args = [
        "layer",
        "pack",
        crate::common::rootfs().to_str().unwrap(),
        "--name",
        "busybox",
        "--version",
        "1",
        "-o",
        img.to_str().unwrap(),
    ];
    ok(&lrun_with(env, &store(env), &args));
    ok(&lrun_with(
        env,
        &store(env),
        &["layer", "add", img.to_str().unwrap()],
    ));
}

/// Start `create` with a prestart hook that records its own pid and sleeps, wait until the
/// hook runs (the layers, if any, are mounted by then), and SIGKILL that create (by its pid).
fn kill_create_in_prestart(env: &mut Env, b: &mut Bundle, name: &str) -> String {
    let marker = env.scratch.join(format!("{name}.hookpid"));
    b.config["hooks"] = json!({"prestart": [{
        "path": "/bin/sh",
        "args": ["sh", "-c", format!("echo $$ > {}.tmp && mv {0}.tmp {0} && exec sleep 60", marker.display())]
    }]});
    b.write();
    let id = env.id(name);
    let mut create = env
        .lrun()
        .arg("--store")
        .arg(store(env))
        .args(["create", "--bundle", b.path(), &id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the prestart hook never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    let create_pid = Pid::from_raw(create.id() as i32);
    kill(create_pid, Signal::SIGKILL).unwrap();
    create.wait().unwrap();
    let hook: i32 = fs::read_to_string(&marker).unwrap().trim().parse().unwrap();
    let _ = kill(Pid::from_raw(hook), Signal::SIGKILL);
    id
}

/// busybox@1 and six small layers above it (l1@1 .. l6@1), so that mounting the stack takes
/// long enough to be caught half-way.
fn layer_stack(env: &Env) {
    busybox_layer(env);
    let mut dep = env.scratch.join("busybox.lrl");
    for i in 1..=6 {
        let tree = env.scratch.join(format!("l{i}-tree"));
        fs::create_dir_all(tree.join("layers")).unwrap();
        fs::write(tree.join("layers").join(i.to_string()), "x\n").unwrap();
        let img = env.scratch.join(format!("l{i}.lrl"));
        let name = format!("l{i}");
        ok(&lrun_with(
            env,
            &store(env),
            &[
                "layer",
                "pack",
                tree.to_str().unwrap(),
                "--name",
                &name,
                "--version",
                "1",
                "--dep",
                dep.to_str().unwrap(),
                "-o",
                img.to_str().unwrap(),
            ],
        ));
        ok(&lrun_with(
            env,
            &store(env),
            &["layer", "add", img.to_str().unwrap()],
        ));
        dep = img;
    }
}

fn layer_mounts(env: &Env) -> usize {
    let layers = env.root.join("@layers").to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&layers))
        .count()
}

#[test]
fn create_killed_while_mounting_layers_is_removed_by_delete_force() {
    let mut env = Env::new();
    layer_stack(&env);
    let mut b = env.bundle("killed", &["true"]);
    b.config["root"] = json!({"path": "rootfs", "readonly": false});
    b.config["annotations"] = json!({"org.lrun.layers": "l6@1"});
    b.write();
    let id = env.id("killed");
    let mut create = env
        .lrun()
        .arg("--store")
        .arg(store(&env))
        .args(["create", "--bundle", b.path(), &id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // SIGKILL it (by its pid) as soon as its first layer is mounted.
    let deadline = Instant::now() + Duration::from_secs(20);
    while layer_mounts(&env) == 0 {
        assert!(Instant::now() < deadline, "the layers were never mounted");
    }
    kill(Pid::from_raw(create.id() as i32), Signal::SIGKILL).unwrap();
    create.wait().unwrap();
    let out = lrun_with(&env, &store(&env), &["delete", "--force", &id]);
    ok(&out);
    assert!(!env.root.join(&id).exists(), "state left");
    assert_eq!(layer_mounts(&env), 0, "layer mounts left");
}

#[test]
fn create_killed_in_prestart_with_layers_mounted_is_removed_by_delete_force() {
    let mut env = Env::new();
    busybox_layer(&env);
    let mut b = env.bundle("killed", &["true"]);
    b.config["root"] = json!({"path": "rootfs", "readonly": false});
    b.config["annotations"] = json!({"org.lrun.layers": "busybox@1"});
    let id = kill_create_in_prestart(&mut env, &mut b, "killed");
    assert!(layer_mounts(&env) > 0, "the layers were never mounted");
    let out = lrun_with(&env, &store(&env), &["delete", "--force", &id]);
    ok(&out);
    assert!(!env.root.join(&id).exists(), "state left");
    assert_eq!(layer_mounts(&env), 0, "layer mounts left");
}

#[test]
fn gc_goes_on_past_a_container_it_cannot_delete_and_reports_it() {
    let mut env = Env::new();
    let mut b = env.bundle("gc-a", &["true"]);
    let stuck = kill_create_in_prestart(&mut env, &mut b, "gc-stuck");
    let mut b = env.bundle("gc-b", &["true"]);
    let other = kill_create_in_prestart(&mut env, &mut b, "gc-other");
    // Something lrun did not make holds the first one's state directory: its delete fails.
    let blocker = env.root.join(&stuck).join("blocker");
    fs::create_dir(&blocker).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "lrun-test-blocker"])
        .arg(&blocker)
        .status()
        .unwrap();
    assert!(st.success());
    let out = env.out(&["gc"]);
    let umount = Command::new("umount").arg(&blocker).status().unwrap();
    assert!(umount.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "gc must report the failure: {stdout}{stderr}"
    );
    assert!(
        !env.root.join(&other).exists(),
        "gc stopped before {other}: {stderr}"
    );
    assert!(stdout.contains(&format!("removed {other}")), "{stdout}");
    let failed: Vec<&str> = stderr.lines().filter(|l| l.contains(&stuck)).collect();
    assert_eq!(failed.len(), 1, "one line for {stuck}: {stderr}");
    // Once the blocker is gone, gc finishes the job.
    let out = env.out(&["gc"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!env.root.join(&stuck).exists());
}

// ---- NOTIFY_SOCKET under a long --root and id ----

/// The sd-notify fixture of process_io.rs, built statically (it runs in the busybox rootfs).
fn sd_notify_binary() -> Option<std::path::PathBuf> {
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sd-notify");
    if !out.exists() {
        let src = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/integration/fixtures/sd-notify.c"
        );
        let tmp = out.with_extension(format!("tmp{}", std::process::id()));
        let st = Command::new("cc")
            .args(["-static", "-O2", "-o"])
            .arg(&tmp)
            .arg(src)
            .status()
            .ok()?;
        if !st.success() {
            return None;
        }
        fs::rename(&tmp, &out).ok()?;
    }
    Some(out)
}

#[test]
fn notify_socket_works_with_a_long_root_and_id() {
    let Some(notifier) = sd_notify_binary() else {
        lrun::test_support::skip("building the sd-notify fixture needs cc and static libc");
        return;
    };
    let mut env = Env::new();
    let host = env.scratch.join("host-notify.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&host).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // A state root of ~150 bytes and an id near the 255-byte limit of a directory name: the
    // socket path is far beyond the 107 bytes a socket address holds.
    let root = env.scratch.join(format!("r{}", "o".repeat(120)));
    let mut id = env.id("notify");
    id.push_str(&"x".repeat(250 - id.len()));
    env.ids.push(id.clone());
    let mut b = env.bundle(
        "notify",
        &["sh", "-c", "/sd-notify READY=1; exec sleep 1000"],
    );
    b.config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/sd-notify", "type": "bind", "source": notifier,
        "options": ["bind", "ro"]
    }));
    b.write();
    let lrun = |args: &[&str]| {
        let log = env.scratch.join("notify.err");
        let st = Command::new(crate::common::LRUN)
            .arg("--root")
            .arg(&root)
            .env("NOTIFY_SOCKET", &host)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .status()
            .unwrap();
        (st.success(), fs::read_to_string(&log).unwrap())
    };
    let (created, err) = lrun(&["create", "--bundle", b.path(), &id]);
    let (started, start_err) = if created {
        lrun(&["start", &id])
    } else {
        (false, String::new())
    };
    let mut buf = [0u8; 4096];
    let got = if started {
        listener.recv(&mut buf).ok()
    } else {
        None
    };
    let (deleted, _) = lrun(&["delete", "--force", &id]);
    // create may refuse, but what it accepts must start.
    assert!(
        !created || started,
        "create succeeded but start failed: {start_err}"
    );
    assert!(created, "create refused: {err}");
    let msg = String::from_utf8_lossy(&buf[..got.expect("READY=1 was not relayed")]).into_owned();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}");
    assert!(deleted || !created);
    assert!(!root.join(&id).exists(), "state left");
}

// ---- lrun image import: what an OCI image can make lrun write ----

fn sha256(data: &[u8]) -> String {
    use sha2::Digest as _;
    let hex: String = sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

fn oci_blob(layout: &std::path::Path, media: &str, data: &[u8]) -> serde_json::Value {
    let d = sha256(data);
    let p = layout
        .join("blobs/sha256")
        .join(d.strip_prefix("sha256:").unwrap());
    fs::write(p, data).unwrap();
    json!({"mediaType": media, "digest": d, "size": data.len()})
}

/// An OCI image layout in `dir` with one gzip layer holding `files` and the image config's
/// `config` object.
fn oci_layout(
    dir: &std::path::Path,
    files: &[(&str, &[u8])],
    config: serde_json::Value,
) -> std::path::PathBuf {
    use std::io::Write as _;
    let layout = dir.join("oci");
    fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let mut t = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        t.append_data(&mut h, path, *data).unwrap();
    }
    let layer_tar = t.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&layer_tar).unwrap();
    let layer = oci_blob(
        &layout,
        "application/vnd.oci.image.layer.v1.tar+gzip",
        &gz.finish().unwrap(),
    );
    let image_config = json!({
        "architecture": "amd64", "os": "linux", "config": config,
        "rootfs": {"type": "layers", "diff_ids": [sha256(&layer_tar)]}
    });
    let cfg = oci_blob(
        &layout,
        "application/vnd.oci.image.config.v1+json",
        image_config.to_string().as_bytes(),
    );
    let manifest = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": cfg, "layers": [layer]
    });
    let md = oci_blob(
        &layout,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
    fs::write(
        layout.join("index.json"),
        json!({"schemaVersion": 2, "manifests": [md]}).to_string(),
    )
    .unwrap();
    layout
}

/// Bytes the files under `dir` take on disk.
fn disk_usage(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            disk_usage(&e.path())
        } else {
            m.blocks() * 512
        };
    }
    total
}

#[test]
fn zero_filled_layer_imports_as_a_small_image() {
    let env = Env::new();
    // 64 MiB of zeros: a ~64 KB gzip blob.
    let zeros = vec![0u8; 64 << 20];
    let layout = oci_layout(
        &env.scratch,
        &[("big", &zeros), ("small", b"x\n")],
        json!({"Cmd": ["/bin/sh"]}),
    );
    drop(zeros);
    let blob_bytes = disk_usage(&layout.join("blobs"));
    let store = store(&env);
    let out = lrun_with(
        &env,
        &store,
        &[
            "image",
            "import",
            layout.to_str().unwrap(),
            "--name",
            "bomb",
            "--version",
            "1",
        ],
    );
    ok(&out);
    let image_bytes = disk_usage(&store);
    println!("OCI blobs {blob_bytes} bytes on disk, layer store {image_bytes} bytes");
    assert!(
        image_bytes < 4 << 20,
        "a {blob_bytes}-byte image of zeros took {image_bytes} bytes in the store"
    );
}

/// CVE-2024-21626 through an image: a WorkingDir of /proc/self/fd/N would start the process
/// in a leaked host directory. `image import` refuses it, and other unclean paths, before it
/// writes anything.
#[test]
fn image_import_refuses_unclean_working_dir_and_writes_nothing() {
    let env = Env::new();
    for (i, (field, value)) in [
        ("WorkingDir", json!("/proc/self/fd/4")),
        ("WorkingDir", json!("../x")),
        ("WorkingDir", json!("/data/../../x")),
        ("Env", json!(["NOT-KEY-VALUE"])),
        ("User", json!("a:b:c")),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = env.scratch.join(format!("img{i}"));
        let mut config = json!({"Cmd": ["/bin/sh"]});
        config[field] = value.clone();
        let layout = oci_layout(&dir, &[("file", b"x\n")], config);
        let store = dir.join("store");
        let bundle = dir.join("bundle");
        let out = lrun_with(
            &env,
            &store,
            &[
                "image",
                "import",
                layout.to_str().unwrap(),
                "--name",
                "evil",
                "--version",
                "1",
                "-o",
                bundle.to_str().unwrap(),
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{field} {value} was imported");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(field), "the error must name {field}: {err}");
        assert_eq!(
            disk_usage(&store),
            0,
            "{field} {value}: layers reached the store"
        );
        assert!(!bundle.exists(), "{field} {value}: a bundle was written");
    }
}

// ---- CVE-2022-29162: capabilities must not reach the inheritable set ----

fn cap_line(status: &str, name: &str) -> String {
    status
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_default()
        .to_string()
}

/// `run` with the default spec, and `exec --cap` (with the spec's capabilities and with none
/// in config.json): the inheritable and ambient sets stay empty, so a file capability or an
/// exec'd program cannot pick the capability up.
#[test]
fn capabilities_never_reach_the_inheritable_set() {
    let mut env = Env::new();
    let b = env.bundle(
        "caps",
        &["grep", "-E", "^Cap(Inh|Amb)", "/proc/self/status"],
    );
    let (code, out, err) = run(&mut env, &b);
    assert_eq!(code, 0, "{err}");
    assert_eq!(cap_line(&out, "CapInh"), "CapInh:\t0000000000000000");
    assert_eq!(cap_line(&out, "CapAmb"), "CapAmb:\t0000000000000000");
    for with_caps in [true, false] {
        let mut b = env.bundle("caps-exec", &["sleep", "100"]);
        if !with_caps {
            b.config["process"]
                .as_object_mut()
                .unwrap()
                .remove("capabilities");
        }
        b.write();
        let id = env.id("caps-exec");
        let (ok_run, err) = env.quiet(&["run", "-d", "--bundle", b.path(), &id]);
        assert!(ok_run, "{err}");
        let out = env.out(&[
            "exec",
            "--cap",
            "CAP_NET_RAW",
            &id,
            "grep",
            "-E",
            "^Cap(Inh|Amb|Eff)",
            "/proc/self/status",
        ]);
        let status = ok(&out);
        assert!(env.quiet(&["delete", "--force", &id]).0);
        // CAP_NET_RAW is bit 13: it is effective, and nowhere else it should not be.
        assert!(
            cap_line(&status, "CapEff").ends_with("2000")
                || cap_line(&status, "CapEff").ends_with("2420"),
            "with_caps={with_caps}: {status}"
        );
        assert_eq!(
            cap_line(&status, "CapInh"),
            "CapInh:\t0000000000000000",
            "with_caps={with_caps}"
        );
        assert_eq!(
            cap_line(&status, "CapAmb"),
            "CapAmb:\t0000000000000000",
            "with_caps={with_caps}"
        );
    }
}

/// CVE-2026-30892 class (crun parsed `exec -u 1` as uid 0): `--user UID[:GID]` gives exactly
/// that uid and gid, gid 0 when absent, never root for a non-zero uid.
#[test]
fn exec_user_is_parsed_as_given() {
    let mut env = Env::new();
    let b = env.bundle("exec-user", &["sleep", "100"]);
    b.write();
    let id = env.id("exec-user");
    let (ok_run, err) = env.quiet(&["run", "-d", "--bundle", b.path(), &id]);
    assert!(ok_run, "{err}");
    let ids = |user: &str| {
        ok(&env.out(&[
            "exec",
            "--user",
            user,
            &id,
            "sh",
            "-c",
            "echo $(id -u):$(id -g)",
        ]))
    };
    let results = [ids("1"), ids("1000:1001"), ids("0:5")];
    assert!(env.quiet(&["delete", "--force", &id]).0);
    assert_eq!(results, ["1:0\n", "1000:1001\n", "0:5\n"]);
}
