//! Containers on layered roots, through the lrun binary: what the container sees, where its
//! writes go, and that delete leaves nothing. Needs root and mkfs.erofs.
//! Wired in Cargo.toml as `[[test]] name = "layers_run", path = "integration/layers_run.rs"`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{Env, lrun_with, ok};
use serde_json::json;

/// A store for one test, next to its state root (removed with it).
fn store(env: &Env) -> PathBuf {
    env.scratch.join("store")
}

fn lrun(env: &Env, args: &[&str]) -> Output {
    lrun_with(env, &store(env), args)
}

/// busybox@1 (the shared busybox rootfs) and app@1 above it, adding /etc/app and replacing
/// /etc/group; both imported into the test's store.
fn layers(env: &Env) {
    let base = env.scratch.join("busybox.lrl");
    ok(&lrun(
        env,
        &[
            "layer",
            "pack",
            common::rootfs().to_str().unwrap(),
            "--name",
            "busybox",
            "--version",
            "1",
            "-o",
            base.to_str().unwrap(),
        ],
    ));
    let tree = env.scratch.join("app-tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/app"), "from app\n").unwrap();
    fs::write(tree.join("etc/group"), "app:x:7:\n").unwrap();
    let app = env.scratch.join("app.lrl");
    ok(&lrun(
        env,
        &[
            "layer",
            "pack",
            tree.to_str().unwrap(),
            "--name",
            "app",
            "--version",
            "1",
            "--dep",
            base.to_str().unwrap(),
            "-o",
            app.to_str().unwrap(),
        ],
    ));
    ok(&lrun(
        env,
        &[
            "layer",
            "add",
            base.to_str().unwrap(),
            app.to_str().unwrap(),
        ],
    ));
}

fn layered_bundle(env: &Env, name: &str, script: &str, readonly: bool) -> PathBuf {
    let mut b = env.bundle(name, &["sh", "-c", script]);
    b.config["root"] = json!({"path": "rootfs", "readonly": readonly});
    b.config["annotations"] = json!({"org.lrun.layers": "app@1"});
    b.write();
    b.dir.clone()
}

fn run(env: &mut Env, name: &str, bundle: &Path) -> Output {
    let id = env.id(name);
    lrun(env, &["run", "--bundle", bundle.to_str().unwrap(), &id])
}

#[test]
fn layered_root_shows_every_layer_and_keeps_writes_private() {
    let mut env = Env::new();
    layers(&env);
    let script = "cat /etc/app /etc/group; echo mine > /etc/new; cat /etc/new; rm /bin/ls; \
                  ls /bin/ls 2>/dev/null || echo ls-gone";
    let b = layered_bundle(&env, "write", script, false);
    let out = run(&mut env, "write", &b);
    assert_eq!(ok(&out), "from app\napp:x:7:\nmine\nls-gone\n");
    // A second container on the same layers sees none of that.
    let b2 = layered_bundle(
        &env,
        "fresh",
        "test -e /etc/new && echo leaked; test -e /bin/ls && echo ls-here",
        false,
    );
    let out = run(&mut env, "fresh", &b2);
    assert_eq!(ok(&out), "ls-here\n");
    assert!(!env.root.join("@layers").exists(), "layer mounts left");
}

#[test]
fn readonly_layered_root_refuses_writes() {
    let mut env = Env::new();
    layers(&env);
    let b = layered_bundle(&env, "ro", "echo x > /etc/x || echo refused", true);
    let out = run(&mut env, "ro", &b);
    assert_eq!(ok(&out), "refused\n");
}

#[test]
fn created_layered_containers_share_mounts_until_deleted() {
    let mut env = Env::new();
    layers(&env);
    let b = layered_bundle(&env, "sleep", "sleep 100", false);
    let ids = [env.id("a"), env.id("b")];
    for id in &ids {
        // create leaves the init holding its stdio: do not capture it.
        let st = common::lrun_command()
            .arg("--root")
            .arg(&env.root)
            .arg("--store")
            .arg(store(&env))
            .args(["create", "--bundle", b.to_str().unwrap(), id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "create {id}");
    }
    // Two layers mounted once each, shared by both containers.
    let shared: Vec<_> = fs::read_dir(env.root.join("@layers"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(shared.len(), 2);
    for l in &shared {
        assert_eq!(fs::read_dir(l.path().join("users")).unwrap().count(), 2);
    }
    let ls = ok(&lrun(&env, &["layer", "ls", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&ls).unwrap();
    assert!(v.as_array().unwrap().iter().all(|l| l["inUse"] == true));
    for id in &ids {
        ok(&lrun(&env, &["delete", "--force", id]));
    }
    assert!(!env.root.join("@layers").exists(), "layer mounts left");
    // Nothing in use: gc empties the store.
    let out = ok(&lrun(&env, &["layer", "gc"]));
    assert!(out.contains("2 image(s) removed"), "{out}");
}

/// Mounts of `mountinfo` (a /proc/PID/mountinfo text) whose mount point is below `dir`, as
/// (mount point, filesystem type).
fn mounts_below(mountinfo: &str, dir: &Path) -> Vec<(String, String)> {
    let prefix = format!("{}/", dir.display());
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let point = left.split(' ').nth(4)?;
            let fstype = right.split(' ').next()?;
            point
                .starts_with(&prefix)
                .then(|| (point.to_string(), fstype.to_string()))
        })
        .collect()
}

#[test]
fn container_overlay_is_mounted_in_its_own_namespace_only() {
    let mut env = Env::new();
    layers(&env);
    let b = layered_bundle(&env, "ns", "echo mine > /etc/new; sleep 100", false);
    let mut bt = env.bundle("ns-tmpfs", &["sh", "-c", "echo mine > /etc/new; sleep 100"]);
    bt.config["root"] = json!({"path": "rootfs", "readonly": false});
    bt.config["annotations"] =
        json!({"org.lrun.layers": "app@1", "org.lrun.layers.upper": "tmpfs,size=4m"});
    bt.write();
    let mut ids = Vec::new();
    for bundle in [&b, &bt.dir] {
        let id = env.id("ns");
        let (ok_, err) = env.quiet(&[
            "--store",
            store(&env).to_str().unwrap(),
            "run",
            "-d",
            "--bundle",
            bundle.to_str().unwrap(),
            &id,
        ]);
        assert!(ok_, "run -d: {err}");
        ids.push(id);
    }
    let host = fs::read_to_string("/proc/self/mountinfo").unwrap();
    for id in &ids {
        // The runtime's namespace lists the shared layers only: no overlay, no upper tmpfs,
        // and the merged directory is an empty mount point.
        let cdir = env.root.join(id);
        assert_eq!(
            mounts_below(&host, &cdir),
            vec![],
            "{id} in the host's table"
        );
        assert_eq!(fs::read_dir(cdir.join("root/merged")).unwrap().count(), 0);
        // The container's root is the overlay, with its writes.
        let pid = env.state(id)["pid"].as_u64().unwrap();
        let inside = fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
        let root = inside
            .lines()
            .find(|l| l.split(' ').nth(4) == Some("/"))
            .unwrap();
        assert!(root.contains(" - overlay "), "{id}: root is {root}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let new = format!("/proc/{pid}/root/etc/new");
        while fs::read_to_string(&new).is_err() {
            assert!(std::time::Instant::now() < deadline, "{id}: no /etc/new");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(fs::read_to_string(&new).unwrap(), "mine\n");
        assert_eq!(
            fs::read_to_string(format!("/proc/{pid}/root/etc/app")).unwrap(),
            "from app\n"
        );
    }
    let shared = mounts_below(&host, &env.root.join("@layers"));
    assert_eq!(shared.len(), 2, "{shared:?}");
    for id in &ids {
        ok(&lrun(&env, &["delete", "--force", id]));
    }
    let host = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert_eq!(mounts_below(&host, &env.root), vec![]);
}

#[test]
fn missing_layer_fails_create_with_one_line_and_leaves_nothing() {
    let mut env = Env::new();
    layers(&env);
    let mut b = env.bundle("missing", &["true"]);
    b.config["annotations"] = json!({"org.lrun.layers": "nope@1"});
    b.write();
    let id = env.id("missing");
    let out = lrun(&env, &["run", "--bundle", b.dir.to_str().unwrap(), &id]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("nope@1"), "{err}");
}

/// Five squashfs layers (each on a loop device): busybox, then l1..l4 each adding a file.
fn five_squashfs_layers(env: &Env) {
    let mut prev = env.scratch.join("l0.lrl");
    ok(&lrun(
        env,
        &[
            "layer",
            "pack",
            common::rootfs().to_str().unwrap(),
            "--fs",
            "squashfs",
            "--name",
            "l0",
            "--version",
            "1",
            "-o",
            prev.to_str().unwrap(),
        ],
    ));
    for i in 1..5 {
        let tree = env.scratch.join(format!("t{i}"));
        fs::create_dir_all(tree.join("layers")).unwrap();
        fs::write(tree.join("layers").join(i.to_string()), format!("{i}\n")).unwrap();
        let img = env.scratch.join(format!("l{i}.lrl"));
        ok(&lrun(
            env,
            &[
                "layer",
                "pack",
                tree.to_str().unwrap(),
                "--fs",
                "squashfs",
                "--name",
                &format!("l{i}"),
                "--version",
                "1",
                "--dep",
                prev.to_str().unwrap(),
                "-o",
                img.to_str().unwrap(),
            ],
        ));
        prev = img;
    }
    let imgs: Vec<String> = (0..5)
        .map(|i| {
            env.scratch
                .join(format!("l{i}.lrl"))
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let mut args = vec!["layer", "add"];
    args.extend(imgs.iter().map(String::as_str));
    ok(&lrun(env, &args));
}

/// Loop devices whose backing file is in this test's store.
fn loops_of(store: &Path) -> usize {
    let out = Command::new("losetup")
        .args(["-l", "-n", "-O", "BACK-FILE"])
        .output()
        .unwrap();
    let store = store.to_string_lossy().into_owned();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&store))
        .count()
}

#[test]
fn thirty_two_concurrent_lrun_creates_use_five_loop_devices() {
    let mut env = Env::new();
    five_squashfs_layers(&env);
    let mut b = env.bundle("many", &["sh", "-c", "cat /layers/1 /layers/4; sleep 100"]);
    b.config["annotations"] = json!({"org.lrun.layers": "l4@1"});
    b.write();
    let ids: Vec<String> = (0..32).map(|i| env.id(&format!("c{i}"))).collect();
    // create leaves the init holding its stdio: errors go to files, not pipes.
    let children: Vec<_> = ids
        .iter()
        .map(|id| {
            let err = fs::File::create(env.scratch.join(format!("{id}.err"))).unwrap();
            common::lrun_command()
                .arg("--root")
                .arg(&env.root)
                .arg("--store")
                .arg(store(&env))
                .args(["create", "--bundle", b.path(), id])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(err)
                .spawn()
                .unwrap()
        })
        .collect();
    for (id, mut c) in ids.iter().zip(children) {
        let st = c.wait().unwrap();
        let err = fs::read_to_string(env.scratch.join(format!("{id}.err"))).unwrap_or_default();
        assert!(st.success(), "create {id}: {err}");
    }
    assert_eq!(
        loops_of(&store(&env)),
        5,
        "one loop device per distinct layer"
    );
    let deletes: Vec<_> = ids
        .iter()
        .map(|id| {
            common::lrun_command()
                .arg("--root")
                .arg(&env.root)
                .arg("--store")
                .arg(store(&env))
                .args(["delete", "--force", id])
                .stdin(Stdio::null())
                .output()
        })
        .collect();
    for d in deletes {
        let out = d.unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // AUTOCLEAR frees each loop device once its last mount is gone (asynchronously).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while loops_of(&store(&env)) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "loop devices left after delete"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!env.root.join("@layers").exists(), "layer mounts left");
}

/// lrun with this test's roots and an idle layer policy of its own.
fn lrun_idle(env: &Env, timeout: &str, max: &str, args: &[&str]) -> Output {
    env.lrun()
        .env("LRUN_LAYER_IDLE_TIMEOUT", timeout)
        .env("LRUN_LAYER_IDLE_MAX", max)
        .arg("--store")
        .arg(store(env))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run lrun")
}

/// The shared layer mounts of this state root: layer directory name -> mount id.
fn layer_mounts(env: &Env) -> std::collections::BTreeMap<String, String> {
    let prefix = format!("{}/", env.root.join("@layers").display());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let rest = f[4].strip_prefix(&prefix)?;
            let hex = rest.strip_suffix("/mnt")?;
            Some((hex.to_string(), f[0].to_string()))
        })
        .collect()
}

#[test]
fn idle_layers_stay_mounted_for_the_next_container_until_dropped() {
    let mut env = Env::new();
    layers(&env);
    let b = layered_bundle(&env, "idle", "cat /etc/app", true);
    let id = env.id("first");
    let out = lrun_idle(
        &env,
        "300",
        "64",
        &["run", "--bundle", b.to_str().unwrap(), &id],
    );
    assert_eq!(ok(&out), "from app\n");
    // Deleted, yet both layers stay mounted, with no reference.
    let kept = layer_mounts(&env);
    assert_eq!(kept.len(), 2, "idle layers: {kept:?}");
    for hex in kept.keys() {
        assert!(!env.root.join("@layers").join(hex).join("users").exists());
    }
    // The next container uses those very mounts (same mount ids) and mounts nothing.
    let id = env.id("second");
    let out = lrun_idle(
        &env,
        "300",
        "64",
        &["run", "--bundle", b.to_str().unwrap(), &id],
    );
    assert_eq!(ok(&out), "from app\n");
    assert_eq!(layer_mounts(&env), kept);
    // `gc` keeps what the policy keeps; `gc --drop-idle` unmounts it at once.
    ok(&lrun_idle(&env, "300", "64", &["gc"]));
    assert_eq!(layer_mounts(&env), kept);
    ok(&lrun_idle(&env, "300", "64", &["gc", "--drop-idle"]));
    assert!(layer_mounts(&env).is_empty());
    assert!(!env.root.join("@layers").exists(), "layer dirs left");
}

#[test]
fn expired_idle_layers_go_with_the_next_create_and_the_count_is_bounded() {
    let mut env = Env::new();
    layers(&env);
    // A second package on the same base: other@1 over busybox@1.
    let tree = env.scratch.join("other-tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/other"), "from other\n").unwrap();
    let other = common::pack_tree(&env, &tree, "other", &[&env.scratch.join("busybox.lrl")]);
    ok(&lrun(&env, &["layer", "add", other.to_str().unwrap()]));
    let digest = |name: &str| {
        let out = ok(&lrun(&env, &["layer", "ls", "--json"]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let l = v
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {out}"));
        l["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string()
    };
    let (busybox, app, other) = (digest("busybox"), digest("app"), digest("other"));
    let b = layered_bundle(&env, "app", "true", true);
    let id = env.id("app");
    ok(&lrun_idle(
        &env,
        "1",
        "64",
        &["run", "--bundle", b.to_str().unwrap(), &id],
    ));
    assert_eq!(layer_mounts(&env).len(), 2);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // app@1 has been idle past its second: the create of other@1 unmounts it, keeps
    // busybox@1 (its own layer), and leaves its own two idle when it is deleted.
    let mut bo = env.bundle("other", &["true"]);
    bo.config["root"] = json!({"path": "rootfs", "readonly": true});
    bo.config["annotations"] = json!({"org.lrun.layers": "other@1"});
    bo.write();
    let id = env.id("other");
    ok(&lrun_idle(
        &env,
        "1",
        "64",
        &["run", "--bundle", bo.dir.to_str().unwrap(), &id],
    ));
    let left: Vec<String> = layer_mounts(&env).into_keys().collect();
    let mut want = vec![busybox.clone(), other.clone()];
    want.sort();
    assert_eq!(left, want, "app@1 is {app}");
    assert!(!env.root.join("@layers").join(&app).exists());
    // With room for one idle layer, a delete keeps only the most recently used.
    ok(&lrun_idle(&env, "300", "1", &["gc", "--drop-idle"]));
    let id = env.id("one");
    ok(&lrun_idle(
        &env,
        "300",
        "1",
        &["run", "--bundle", b.to_str().unwrap(), &id],
    ));
    assert_eq!(layer_mounts(&env).len(), 1, "{:?}", layer_mounts(&env));
}
