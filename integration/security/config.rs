//! Security tests: see integration/security.rs.
//!
//! config.json fields that reach the host: linux.sysctl (global keys, keys of a namespace the
//! container shares, writes redirected by a mount over /proc/sys).

use std::fs;

use serde_json::json;

use crate::common::{Bundle, Env, run};

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
    b.config["linux"]["sysctl"] =
        json!({"kernel.shmmax": "12345678", "net/ipv4/ip_forward": "1"});
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
