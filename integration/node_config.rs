//! The node configuration file (runtime-spec/node-config.md) through the lrun binary: a
//! layered bundle runs with its store, state root and pull source given only by the file,
//! flags and environment variables win over it, and a bad file stops lrun with one line.
//! Needs root and mkfs.erofs. Never touches /etc/lrun: the file is named with `--config` or
//! `LRUN_CONFIG`.
//! Wired in Cargo.toml as `[[test]] name = "node_config", path = "integration/node_config.rs"`.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{Env, LRUN, lrun_with, ok};
use serde_json::json;

/// busybox@1 and app@1 above it (adding /etc/app), packed into scratch; their paths.
fn pack(env: &Env) -> [PathBuf; 2] {
    let unused = env.scratch.join("unused-store");
    let base = env.scratch.join("busybox.lrl");
    let rootfs = common::rootfs().to_str().unwrap();
    let b = base.to_str().unwrap();
    ok(&lrun_with(
        env,
        &unused,
        &[
            "layer",
            "pack",
            rootfs,
            "--name",
            "busybox",
            "--version",
            "1",
            "-o",
            b,
        ],
    ));
    let tree = env.scratch.join("app-tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/app"), "from app\n").unwrap();
    let app = env.scratch.join("app.lrl");
    let t = tree.to_str().unwrap();
    let a = app.to_str().unwrap();
    ok(&lrun_with(
        env,
        &unused,
        &[
            "layer",
            "pack",
            t,
            "--name",
            "app",
            "--version",
            "1",
            "--dep",
            b,
            "-o",
            a,
        ],
    ));
    [base, app]
}

/// The layers added to a store of their own.
fn store_with_layers(env: &Env) -> PathBuf {
    let store = env.scratch.join("store");
    let [base, app] = pack(env);
    ok(&lrun_with(
        env,
        &store,
        &[
            "layer",
            "add",
            base.to_str().unwrap(),
            app.to_str().unwrap(),
        ],
    ));
    store
}

fn layered_bundle(env: &Env, script: &str) -> PathBuf {
    let mut b = env.bundle("nodecfg", &["sh", "-c", script]);
    b.config["root"] = json!({"path": "rootfs", "readonly": true});
    b.config["annotations"] = json!({"org.lrun.layers": "app@1"});
    b.write();
    b.dir.clone()
}

/// A node configuration file as an administrator writes it (root-owned, mode 644).
fn config(env: &Env, text: &str) -> PathBuf {
    let p = env.scratch.join("lrun.toml");
    fs::write(&p, text).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    p
}

/// lrun with none of its environment variables: what an engine's shim or conmon passes.
fn bare() -> Command {
    let mut c = Command::new(LRUN);
    for k in [
        "LRUN_ROOT",
        "LRUN_STORE",
        "LRUN_CONFIG",
        "LRUN_PULL_SOURCE",
        "LRUN_PULL_STALL_TIMEOUT",
        "LRUN_PULL_DEADLINE",
        "LRUN_LAYER_IDLE_TIMEOUT",
        "LRUN_LAYER_IDLE_MAX",
    ] {
        c.env_remove(k);
    }
    c.stdin(Stdio::null());
    c
}

fn output(mut c: Command) -> Output {
    c.output().expect("run lrun")
}

#[test]
fn layered_bundle_runs_with_the_store_only_in_the_config_file() {
    let mut env = Env::new();
    let store = store_with_layers(&env);
    let cfg = config(&env, &format!("store = {:?}\n", store.to_str().unwrap()));
    let b = layered_bundle(&env, "cat /etc/app");

    // --config FILE.
    let id = env.id("flag");
    let mut c = bare();
    c.arg("--root").arg(&env.root).arg("--config").arg(&cfg);
    c.args(["run", "--bundle", b.to_str().unwrap(), &id]);
    assert_eq!(ok(&output(c)), "from app\n");

    // LRUN_CONFIG=FILE.
    let id = env.id("env");
    let mut c = bare();
    c.env("LRUN_CONFIG", &cfg).arg("--root").arg(&env.root);
    c.args(["run", "--bundle", b.to_str().unwrap(), &id]);
    assert_eq!(ok(&output(c)), "from app\n");

    // A flag and an environment variable each win over the file: an empty store lacks app@1.
    let empty = env.scratch.join("empty-store");
    let id = env.id("flagwins");
    let mut c = bare();
    c.env("LRUN_CONFIG", &cfg).arg("--root").arg(&env.root);
    c.arg("--store").arg(&empty);
    c.args(["run", "--bundle", b.to_str().unwrap(), &id]);
    let out = output(c);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("app@1"), "{err}");
    let id = env.id("envwins");
    let mut c = bare();
    c.env("LRUN_CONFIG", &cfg).env("LRUN_STORE", &empty);
    c.arg("--root").arg(&env.root);
    c.args(["run", "--bundle", b.to_str().unwrap(), &id]);
    let out = output(c);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("app@1"), "{err}");
}

#[test]
fn create_takes_root_store_and_pull_source_from_the_config_file() {
    let mut env = Env::new();
    let [base, app] = pack(&env);
    let src = env.scratch.join("source");
    ok(&lrun_with(
        &env,
        &env.scratch.join("unused-store"),
        &[
            "layer",
            "publish",
            src.to_str().unwrap(),
            base.to_str().unwrap(),
            app.to_str().unwrap(),
        ],
    ));
    let store = env.scratch.join("pulled-store");
    let cfg = config(
        &env,
        &format!(
            "# a node's defaults\nroot = {:?}\nstore = {:?}\n\n[pull]\nsource = {:?}\nstall_timeout = 10\ndeadline = 120\n\n[layers]\nidle_timeout = 0\n",
            env.root.to_str().unwrap(),
            store.to_str().unwrap(),
            src.to_str().unwrap()
        ),
    );
    let b = layered_bundle(&env, "sleep 100");
    let id = env.id("create");
    // As podman's conmon calls it: no --root, no --store, no --pull, no LRUN_* variable.
    let st = bare()
        .env("LRUN_CONFIG", &cfg)
        .args(["create", "--bundle", b.to_str().unwrap(), &id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        st.success(),
        "create with the config file's root, store and source"
    );
    // env.lrun() names the state root explicitly: the container is there.
    assert_eq!(env.status(&id), "created");
    assert!(
        store.join("layers").exists(),
        "layers pulled into the config's store"
    );
    let mut c = bare();
    c.env("LRUN_CONFIG", &cfg).args(["delete", "--force", &id]);
    ok(&output(c));
    // The file's layers.idle_timeout = 0: the delete unmounted the layers.
    common::assert_no_leaks(&env.root, std::slice::from_ref(&id));
}

fn one_line_failure(env: &mut Env, cfg: &Path, expect: &str) {
    let b = env.bundle("bad", &["true"]);
    b.write();
    let id = env.id("badcfg");
    let mut c = bare();
    c.arg("--root").arg(&env.root).arg("--config").arg(cfg);
    c.args(["run", "--bundle", b.path(), &id]);
    let out = output(c);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(&cfg.display().to_string()),
        "names the file: {err}"
    );
    assert!(err.contains(expect), "{err}");
}

#[test]
fn bad_config_file_stops_lrun_with_one_line_and_leaves_nothing() {
    let mut env = Env::new();
    let cfg = config(&env, "store = \"/srv/lrun\"\nstorre = \"/typo\"\n");
    one_line_failure(&mut env, &cfg, ":2: unknown field `storre`");
    let cfg = config(&env, "[pull]\nstall_timeout = \"soon\"\n");
    one_line_failure(&mut env, &cfg, ":2: ");
    let cfg = config(&env, "root = \"/run/lrun-x\"\n");
    fs::set_permissions(&cfg, fs::Permissions::from_mode(0o646)).unwrap();
    one_line_failure(&mut env, &cfg, "writable by its group or others");
    let missing = env.scratch.join("no-such.toml");
    one_line_failure(&mut env, &missing, "No such file");
}
