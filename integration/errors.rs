//! Bad input gets one clear line, a non-zero exit, and leaves nothing behind.

mod common;

use std::fs;

use common::*;
use serde_json::json;

/// Run `create` expecting failure; return stderr, and check no state was left.
fn create_fails(env: &mut Env, bundle: &str) -> String {
    let id = env.id("bad");
    let (ok, err) = env.quiet(&["create", "--bundle", bundle, &id]);
    assert!(!ok, "create succeeded unexpectedly");
    assert!(
        !env.root.join(&id).exists(),
        "state dir left after failed create"
    );
    assert_eq!(
        err.trim().lines().count(),
        1,
        "error is not one line: {err}"
    );
    err
}

#[test]
fn missing_bundle_is_named() {
    let mut env = Env::new();
    let err = create_fails(&mut env, "/nonexistent/bundle");
    assert!(err.contains("/nonexistent/bundle"), "{err}");
}

#[test]
fn missing_config_is_named() {
    let mut env = Env::new();
    let dir = env.scratch.join("empty");
    fs::create_dir_all(&dir).unwrap();
    let err = create_fails(&mut env, dir.to_str().unwrap());
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn malformed_json_says_where() {
    let mut env = Env::new();
    let dir = env.scratch.join("malformed");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("config.json"),
        "{\n  \"ociVersion\": \"1.0.2\",\n  \"process\": {\n",
    )
    .unwrap();
    let err = create_fails(&mut env, dir.to_str().unwrap());
    assert!(err.contains("config.json") && err.contains("line"), "{err}");
}

#[test]
fn wrong_field_type_names_the_field() {
    let mut env = Env::new();
    let mut b = env.bundle("wrongtype", &["true"]);
    b.config["process"]["user"]["uid"] = json!("zero");
    b.write();
    let err = create_fails(&mut env, b.path());
    assert!(err.contains("process.user.uid"), "{err}");
}

#[test]
fn unsupported_oci_version_is_refused() {
    let mut env = Env::new();
    let mut b = env.bundle("version", &["true"]);
    b.config["ociVersion"] = json!("2.0.0");
    b.write();
    let err = create_fails(&mut env, b.path());
    assert!(err.contains("ociVersion"), "{err}");
}

#[test]
fn older_1x_versions_and_unknown_fields_are_accepted() {
    let mut env = Env::new();
    let mut b = env.bundle("old", &["true"]);
    b.config["ociVersion"] = json!("1.0.0");
    b.config["futureThing"] = json!({"a": 1});
    b.config["process"]["futureProcessField"] = json!(true);
    let (code, _, err) = run(&mut env, &b);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn unknown_namespace_type_is_named() {
    let mut env = Env::new();
    let mut b = env.bundle("ns", &["true"]);
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "bogus"}));
    b.write();
    let err = create_fails(&mut env, b.path());
    assert!(
        err.contains("linux.namespaces") && err.contains("bogus"),
        "{err}"
    );
}

#[test]
fn missing_rootfs_is_named() {
    let mut env = Env::new();
    let mut b = env.bundle("noroot", &["true"]);
    b.config["root"]["path"] = json!("does-not-exist");
    b.write();
    let err = create_fails(&mut env, b.path());
    assert!(err.contains("does-not-exist"), "{err}");
}

#[test]
fn missing_executable_fails_create() {
    let mut env = Env::new();
    let b = env.bundle("noexe", &["/no/such/program"]);
    b.write();
    let err = create_fails(&mut env, b.path());
    assert!(err.contains("/no/such/program"), "{err}");
}

#[test]
fn duplicate_id_is_refused_and_the_first_container_survives() {
    let mut env = Env::new();
    let id = env.id("dup");
    let b = env.bundle("dup", &["sleep", "1000"]);
    b.write();
    assert!(env.quiet(&["create", "--bundle", b.path(), &id]).0);
    let (ok, err) = env.quiet(&["create", "--bundle", b.path(), &id]);
    assert!(!ok && err.contains("already exists"), "{err}");
    assert_eq!(env.status(&id), "created");
    assert!(env.quiet(&["delete", "--force", &id]).0);
}

#[test]
fn unknown_id_is_reported() {
    let env = Env::new();
    for cmd in ["state", "start", "kill", "delete"] {
        let (ok, err) = env.quiet(&[cmd, "no-such-container"]);
        assert!(!ok, "{cmd} succeeded");
        assert!(err.contains("does not exist"), "{cmd}: {err}");
    }
}

#[test]
fn ids_with_path_characters_are_refused() {
    let env = Env::new();
    let b = env.bundle("pathid", &["true"]);
    b.write();
    for id in ["../x", "a/b", "..", ""] {
        let (ok, err) = env.quiet(&["create", "--bundle", b.path(), id]);
        assert!(!ok && err.contains("invalid container id"), "{id}: {err}");
    }
    assert!(!env.root.parent().unwrap().join("x").exists());
}

#[test]
fn unknown_signal_is_refused() {
    let env = Env::new();
    let (ok, err) = env.quiet(&["kill", "whatever", "SIGNOPE"]);
    assert!(!ok && err.contains("SIGNOPE"), "{err}");
}

#[test]
fn a_namespace_path_that_does_not_exist_is_named() {
    let mut env = Env::new();
    let mut b = env.bundle("nspath", &["true"]);
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "network");
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "network", "path": "/nonexistent/netns"}));
    b.write();
    let err = create_fails(&mut env, b.path());
    assert!(err.contains("/nonexistent/netns"), "{err}");
}

/// capability.h
const CAP_SYS_RESOURCE: u32 = 24;

/// Whether this process holds capability `bit` (its permitted set, /proc/self/status).
fn we_hold_capability(bit: u32) -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapPrm:"))
        .unwrap()
        .trim();
    u64::from_str_radix(hex, 16).unwrap() & (1 << bit) != 0
}

/// Issue 14 item 1: a capability lrun's caller lacks fails `create` (not the container after
/// `start`) with one line naming the field, and leaves nothing.
#[test]
fn a_capability_the_caller_lacks_fails_create() {
    if we_hold_capability(CAP_SYS_RESOURCE) {
        lrun::test_support::skip("the caller holds CAP_SYS_RESOURCE: nothing to lack");
        return;
    }
    let mut env = Env::new();
    let mut b = env.bundle("nocap", &["true"]);
    for set in ["bounding", "permitted", "effective"] {
        b.config["process"]["capabilities"][set]
            .as_array_mut()
            .unwrap()
            .push(json!("CAP_SYS_RESOURCE"));
    }
    b.write();
    let err = create_fails(&mut env, b.path());
    assert!(
        err.contains("process.capabilities.permitted: CAP_SYS_RESOURCE"),
        "{err}"
    );
    assert!(err.contains("operation not permitted"), "{err}");
}

/// An rlimit above the caller's hard limit (raising it needs CAP_SYS_RESOURCE) fails `create`.
#[test]
fn an_rlimit_above_the_hard_limit_fails_create() {
    if we_hold_capability(CAP_SYS_RESOURCE) {
        lrun::test_support::skip("the caller holds CAP_SYS_RESOURCE: any hard limit can be raised");
        return;
    }
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let mut env = Env::new();
    let mut b = env.bundle("rlimit", &["true"]);
    b.config["process"]["rlimits"] =
        json!([{"type": "RLIMIT_NOFILE", "soft": hard + 1, "hard": hard + 1}]);
    b.write();
    let err = create_fails(&mut env, b.path());
    assert!(err.contains("process.rlimits: RlimitNofile"), "{err}");
}

/// A user namespace whose maps lack process.user.uid: setuid fails `create`.
#[test]
fn an_unmapped_process_user_fails_create() {
    let mut env = Env::new();
    let mut b = env.bundle("unmapped", &["true"]);
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    b.config["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 1000}]);
    b.config["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 1000}]);
    b.config["process"]["user"] = json!({"uid": 5000, "gid": 0});
    b.write();
    let err = create_fails(&mut env, b.path());
    assert!(err.contains("setuid 5000 (process.user.uid)"), "{err}");
}

/// The same at `exec`: the process sets its capabilities before it reports ready, so `exec`
/// itself fails, exit 255 as runc's exec failures, with the field named.
#[test]
fn exec_with_a_capability_the_caller_lacks_fails_with_255() {
    if we_hold_capability(CAP_SYS_RESOURCE) {
        lrun::test_support::skip("the caller holds CAP_SYS_RESOURCE: nothing to lack");
        return;
    }
    let mut env = Env::new();
    let b = env.bundle("execcap", &["sleep", "1000"]);
    b.write();
    let id = env.id("execcap");
    let (ok, err) = env.quiet(&["run", "-d", "--bundle", b.path(), &id]);
    assert!(ok, "{err}");
    let (code, err) = env.quiet_code(&["exec", "--cap", "CAP_SYS_RESOURCE", &id, "true"]);
    assert_eq!(code, 255, "{err}");
    assert!(
        err.contains("process.capabilities.permitted: CAP_SYS_RESOURCE"),
        "{err}"
    );
    let (ok, err) = env.quiet(&["delete", "--force", &id]);
    assert!(ok, "{err}");
}
