//! config.json honoured, checked from inside the container: namespaces, mounts, devices,
//! masked and read-only paths, process settings, hooks.

mod common;

use std::fs;

use common::*;
use serde_json::json;

#[test]
fn hostname_and_domainname_are_set_in_a_new_uts_namespace() {
    let mut env = Env::new();
    let out = sh(
        &mut env,
        |b| {
            b.config["hostname"] = json!("box1");
            b.config["domainname"] = json!("example.org");
        },
        "hostname; cat /proc/sys/kernel/domainname",
    );
    assert_eq!(out, "box1\nexample.org\n");
}

#[test]
fn the_process_is_pid_1_in_a_new_pid_namespace() {
    let mut env = Env::new();
    let out = sh(&mut env, |_| {}, "echo $$; ps -o pid | wc -l");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1"));
}

#[test]
fn a_new_network_namespace_has_only_loopback() {
    let mut env = Env::new();
    let out = sh(&mut env, |_| {}, "ls /sys/class/net");
    assert_eq!(out.trim(), "lo");
}

#[test]
fn namespaces_are_distinct_from_the_host() {
    let mut env = Env::new();
    let out = sh(
        &mut env,
        |_| {},
        "for n in ipc uts net mnt pid cgroup; do readlink /proc/self/ns/$n; done",
    );
    for (line, n) in out
        .lines()
        .zip(["ipc", "uts", "net", "mnt", "pid", "cgroup"])
    {
        let host = fs::read_link(format!("/proc/self/ns/{n}")).unwrap();
        assert_ne!(line, host.to_str().unwrap(), "{n} namespace is the host's");
    }
}

#[test]
fn an_existing_namespace_is_joined_by_path() {
    let mut env = Env::new();
    let id = env.id("netowner");
    let b = env.bundle("owner", &["sleep", "1000"]);
    b.write();
    assert!(env.quiet(&["run", "-d", "--bundle", b.path(), &id]).0);
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    let want = fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let out = sh(
        &mut env,
        |b| {
            let ns = b.config["linux"]["namespaces"].as_array_mut().unwrap();
            for n in ns.iter_mut() {
                if n["type"] == "network" {
                    n["path"] = json!(format!("/proc/{pid}/ns/net"));
                }
            }
        },
        "readlink /proc/self/ns/net",
    );
    assert_eq!(out.trim(), want.to_str().unwrap());
    assert!(env.quiet(&["delete", "--force", &id]).0);
}

#[test]
fn user_namespace_maps_ids() {
    let mut env = Env::new();
    let out = sh(
        &mut env,
        |b| {
            b.config["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "user"}));
            b.config["linux"]["uidMappings"] =
                json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
            b.config["linux"]["gidMappings"] =
                json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
            // sysfs cannot be mounted from a user namespace that does not own the net namespace's
            // parent; a bind of the host's /sys is what rootless runtimes do.
            for m in b.config["mounts"].as_array_mut().unwrap() {
                if m["type"] == "sysfs" {
                    *m = json!({"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
                }
            }
            b.config["mounts"]
                .as_array_mut()
                .unwrap()
                .retain(|m| m["type"] != "cgroup");
        },
        "cat /proc/self/uid_map; id -u",
    );
    let mut lines = out.lines();
    let map: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(map, ["0", "100000", "65536"]);
    assert_eq!(lines.next(), Some("0"));
}

#[test]
fn time_namespace_applies_offsets() {
    let mut env = Env::new();
    let out = sh(
        &mut env,
        |b| {
            b.config["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "time"}));
            b.config["linux"]["timeOffsets"] =
                json!({"boottime": {"secs": 86400 * 365, "nanosecs": 0}});
        },
        "cut -d. -f1 /proc/uptime",
    );
    let inside: u64 = out.trim().parse().unwrap();
    assert!(
        inside >= 86400 * 365,
        "uptime inside {inside} lacks the offset"
    );
}

#[test]
fn cgroup_namespace_roots_at_the_container_cgroup() {
    let mut env = Env::new();
    let out = sh(&mut env, |_| {}, "cat /proc/self/cgroup");
    for line in out.lines() {
        assert!(line.ends_with(":/"), "not rooted: {line}");
    }
}

#[test]
fn bind_mounts_honour_ro_and_tmpfs_mounts_are_writable() {
    let mut env = Env::new();
    let host = env.scratch.join("shared");
    fs::create_dir_all(&host).unwrap();
    fs::write(host.join("file"), "from host").unwrap();
    let out = sh(
        &mut env,
        |b| {
            let m = b.config["mounts"].as_array_mut().unwrap();
            m.push(json!({"destination": "/data", "type": "bind", "source": host, "options": ["rbind", "ro"]}));
            m.push(json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}));
        },
        "cat /data/file; echo; touch /data/new 2>/dev/null && echo WROTE || echo ro-ok; touch /scratch/x && echo tmpfs-ok",
    );
    assert_eq!(out, "from host\nro-ok\ntmpfs-ok\n");
    assert!(!host.join("new").exists());
}

/// As runc: a read-only /dev tmpfs is filled (devices, /dev/pts) first and made read-only at
/// the end; a read-only tmpfs elsewhere is read-only too.
#[test]
fn a_readonly_dev_tmpfs_gets_its_devices_and_pts_then_refuses_writes() {
    let mut env = Env::new();
    let out = sh(
        &mut env,
        |b| {
            let m = b.config["mounts"].as_array_mut().unwrap();
            let dev = m.iter_mut().find(|m| m["destination"] == "/dev").unwrap();
            dev["options"].as_array_mut().unwrap().push(json!("ro"));
            m.push(json!({"destination": "/rotmp", "type": "tmpfs", "source": "tmpfs", "options": ["ro"]}));
        },
        "test -c /dev/null && test -d /dev/pts && echo hi > /dev/null && echo devs-ok; \
         touch /dev/x 2>/dev/null && echo dev-WROTE || echo dev-ro; \
         touch /rotmp/x 2>/dev/null && echo tmp-WROTE || echo tmp-ro",
    );
    assert_eq!(out, "devs-ok\ndev-ro\ntmp-ro\n");
}

#[test]
fn mount_destinations_cannot_escape_through_symlinks() {
    let mut env = Env::new();
    // A private rootfs whose /evil points at the host's root.
    let rootfs = env.scratch.join("rootfs");
    make_busybox_rootfs(&rootfs);
    std::os::unix::fs::symlink("/", rootfs.join("evil")).unwrap();
    let marker = format!("lrun-escape-{}", std::process::id());
    let dest = format!("/evil/tmp/{marker}");
    let out = sh(
        &mut env,
        |b| {
            b.config["root"]["path"] = json!(rootfs);
            b.config["mounts"]
                .as_array_mut()
                .unwrap()
                .push(json!({"destination": dest, "type": "tmpfs", "source": "tmpfs"}));
        },
        "echo ok",
    );
    assert_eq!(out, "ok\n");
    assert!(
        !std::path::Path::new("/tmp").join(&marker).exists(),
        "mount point created on the host"
    );
    assert!(
        rootfs.join("tmp").join(&marker).is_dir(),
        "mount point not created inside the rootfs"
    );
}

#[test]
fn default_and_configured_devices_exist() {
    let mut env = Env::new();
    let out = sh(
        &mut env,
        |b| {
            b.config["linux"]["devices"] = json!([{"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600, "uid": 0, "gid": 0}]);
            b.config["linux"]["resources"] = json!({"devices": [{"allow": true, "access": "rwm"}]});
        },
        "echo x > /dev/null && head -c 4 /dev/zero | wc -c; stat -c '%t,%T %a' /dev/mynull; readlink /dev/fd; readlink /dev/ptmx; ls -d /dev/pts /dev/shm",
    );
    assert_eq!(
        out,
        "4\n1,3 600\n/proc/self/fd\npts/ptmx\n/dev/pts\n/dev/shm\n"
    );
}

#[test]
fn masked_paths_are_unreadable_and_readonly_paths_unwritable() {
    let mut env = Env::new();
    let out = sh(
        &mut env,
        |b| {
            b.config["linux"]["maskedPaths"] = json!(["/proc/kcore", "/proc/acpi", "/etc/passwd"]);
            b.config["linux"]["readonlyPaths"] = json!(["/proc/sys"]);
        },
        "wc -c < /etc/passwd; ls /proc/acpi 2>/dev/null | wc -l; echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo WROTE || echo ro-ok",
    );
    assert_eq!(out, "0\n0\nro-ok\n");
}

#[test]
fn readonly_root_refuses_writes() {
    let mut env = Env::new();
    let out = sh(
        &mut env,
        |b| {
            b.config["root"]["readonly"] = json!(true);
        },
        "touch /newfile 2>/dev/null && echo WROTE || echo ro-ok",
    );
    assert_eq!(out, "ro-ok\n");
}

#[test]
fn process_user_groups_umask_cwd_and_env_are_applied() {
    let mut env = Env::new();
    let out = sh(
        &mut env,
        |b| {
            b.config["process"]["user"] =
                json!({"uid": 1000, "gid": 1001, "additionalGids": [2000, 2001], "umask": 63});
            b.config["process"]["cwd"] = json!("/tmp");
            b.config["process"]["env"] = json!(["PATH=/bin", "GREETING=hi there"]);
            b.config["root"]["readonly"] = json!(false);
        },
        "id -u; id -g; id -G; umask; pwd; echo $GREETING",
    );
    assert_eq!(out, "1000\n1001\n1001 2000 2001\n0077\n/tmp\nhi there\n");
}

#[test]
fn capabilities_no_new_privs_rlimits_and_oom_score_are_applied() {
    let mut env = Env::new();
    let out = sh(
        &mut env,
        |b| {
            b.config["process"]["capabilities"] = json!({
            "bounding": ["CAP_KILL", "CAP_CHOWN"], "effective": ["CAP_KILL"],
            "permitted": ["CAP_KILL", "CAP_CHOWN"], "inheritable": [], "ambient": []});
            b.config["process"]["noNewPrivileges"] = json!(true);
            b.config["process"]["rlimits"] =
                json!([{"type": "RLIMIT_NOFILE", "soft": 777, "hard": 888}]);
            b.config["process"]["oomScoreAdj"] = json!(500);
        },
        "grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs)' /proc/self/status; ulimit -n; ulimit -Hn; cat /proc/self/oom_score_adj",
    );
    // CAP_CHOWN = bit 0, CAP_KILL = bit 5. exec as uid 0 makes effective = permitted.
    assert_eq!(
        out,
        "CapPrm:\t0000000000000021\nCapEff:\t0000000000000021\nCapBnd:\t0000000000000021\nNoNewPrivs:\t1\n777\n888\n500\n"
    );
}

#[test]
fn sysctl_is_written_in_the_container_namespace() {
    let mut env = Env::new();
    let out = sh(
        &mut env,
        |b| {
            b.config["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
            b.config["linux"]["readonlyPaths"] = json!([]);
        },
        "cat /proc/sys/net/ipv4/ip_forward",
    );
    assert_eq!(out, "1\n");
}

#[test]
fn only_stdio_and_preserved_fds_reach_the_container() {
    let mut env = Env::new();
    let out = sh(
        &mut env,
        |_| {},
        "ls /proc/self/fd | sort -n | tr '\\n' ' '",
    );
    // 0-2, plus the fd ls itself opens for the directory.
    assert_eq!(out, "0 1 2 3 ");
}

#[test]
fn no_pivot_runs_the_container_with_chroot() {
    let mut env = Env::new();
    let b = env.bundle("nopivot", &["sh", "-c", "ls /bin/busybox"]);
    b.write();
    let id = env.id("nopivot");
    let out = env.out(&["run", "--no-pivot", "--bundle", b.path(), &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "/bin/busybox\n");
}

#[test]
fn hooks_run_in_order_with_the_state_on_stdin() {
    let mut env = Env::new();
    let log = env.scratch.join("hooks.log");
    let hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("read -r s; echo \"{name} $s\" >> {}", log.display())]});
    let mut b = env.bundle("hooks", &["true"]);
    b.config["hooks"] = json!({
        "prestart": [hook("prestart")],
        "createRuntime": [hook("createRuntime")],
        "createContainer": [hook("createContainer")],
        "startContainer": [hook("startContainer")],
        "poststart": [hook("poststart")],
        "poststop": [hook("poststop")],
    });
    // createContainer and startContainer run in the container: give them a /bin/sh there
    // that can write to the log (the log's directory bind-mounted at the same path).
    b.config["mounts"].as_array_mut().unwrap().push(json!({"destination": env.scratch, "type": "bind", "source": env.scratch, "options": ["rbind"]}));
    let (code, _, err) = run(&mut env, &b);
    assert_eq!(code, 0, "{err}");
    let text = fs::read_to_string(&log).unwrap();
    let names: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        names,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ]
    );
    for line in text.lines() {
        let state: serde_json::Value =
            serde_json::from_str(line.split_once(' ').unwrap().1).unwrap();
        assert_eq!(state["bundle"], b.path());
        assert!(state["id"].as_str().unwrap().starts_with("lrt-run-"));
    }
}

#[test]
fn a_failing_prestart_hook_fails_create_and_leaves_nothing() {
    let mut env = Env::new();
    let id = env.id("badhook");
    let mut b = env.bundle("badhook", &["true"]);
    b.config["hooks"] = json!({"prestart": [{"path": "/bin/false"}]});
    b.write();
    let (ok, err) = env.quiet(&["create", "--bundle", b.path(), &id]);
    assert!(!ok);
    assert!(err.contains("hooks.prestart[0]"), "{err}");
    assert!(!env.root.join(&id).exists());
}

#[test]
fn a_hook_that_exceeds_its_timeout_is_killed() {
    let mut env = Env::new();
    let id = env.id("slowhook");
    let mut b = env.bundle("slowhook", &["true"]);
    b.config["hooks"] =
        json!({"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]});
    b.write();
    let t = std::time::Instant::now();
    let (ok, err) = env.quiet(&["create", "--bundle", b.path(), &id]);
    assert!(!ok && err.contains("timed out"), "{err}");
    assert!(t.elapsed().as_secs() < 20);
    assert!(!env.root.join(&id).exists());
}

#[test]
fn personality_io_priority_and_scheduler_are_applied() {
    let mut env = Env::new();
    let out = sh(
        &mut env,
        |b| {
            b.config["linux"]["personality"] = json!({"domain": "LINUX32"});
            b.config["process"]["ioPriority"] =
                json!({"class": "IOPRIO_CLASS_IDLE", "priority": 0});
            b.config["process"]["scheduler"] = json!({"policy": "SCHED_BATCH", "nice": 5});
        },
        "uname -m; cut -d' ' -f19,41 /proc/self/stat; ionice -p $$ 2>/dev/null || true",
    );
    let mut lines = out.lines();
    // LINUX32 makes uname report a 32-bit machine.
    assert!(
        matches!(lines.next(), Some("i686") | Some("armv8l") | Some("armv7l")),
        "{out}"
    );
    // nice 5; policy 3 = SCHED_BATCH.
    assert_eq!(lines.next(), Some("5 3"), "{out}");
}

/// The optional fields of the container's `/` in its /proc/self/mountinfo, for each
/// linux.rootfsPropagation value (runc applies shared and unbindable after pivot_root).
#[test]
fn every_rootfs_propagation_value_applies_to_the_container_root() {
    let mut env = Env::new();
    for prop in [
        "private",
        "rprivate",
        "slave",
        "rslave",
        "shared",
        "rshared",
        "unbindable",
        "runbindable",
    ] {
        let mut b = env.bundle("prop", &["cat", "/proc/self/mountinfo"]);
        b.config["linux"]["rootfsPropagation"] = json!(prop);
        let (code, out, err) = run(&mut env, &b);
        assert_eq!(code, 0, "rootfsPropagation {prop}: {err}");
        let root = out
            .lines()
            .find(|l| l.split(' ').nth(4) == Some("/"))
            .unwrap_or_else(|| panic!("{prop}: no / in mountinfo:\n{out}"));
        // Fields 7.. up to the "-" separator are the optional (propagation) fields.
        let fields: Vec<&str> = root.split(' ').skip(6).take_while(|f| *f != "-").collect();
        let shared = fields.iter().any(|f| f.starts_with("shared:"));
        let unbindable = fields.contains(&"unbindable");
        match prop {
            "shared" | "rshared" => assert!(shared && !unbindable, "{prop}: {root}"),
            "unbindable" | "runbindable" => assert!(unbindable && !shared, "{prop}: {root}"),
            // A slave of a private mount shows no master: field; never shared.
            _ => assert!(!shared && !unbindable, "{prop}: {root}"),
        }
        if prop.contains("private") {
            assert!(
                !fields.iter().any(|f| f.starts_with("master:")),
                "{prop}: {root}"
            );
        }
    }
}

/// runtime-spec 1.2 runtime.md lifecycle steps 9 and 13: a failing poststart or poststop hook
/// is logged as a warning, and the remaining hooks and the lifecycle go on.
#[test]
fn a_failing_poststart_or_poststop_hook_is_warned_about_and_the_next_ones_run() {
    let mut env = Env::new();
    let log = env.scratch.join("hooks.log");
    let mark = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {name} >> {}", log.display())]});
    let fail = json!({"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]});
    let mut b = env.bundle("warnhooks", &["true"]);
    b.config["hooks"] = json!({
        "poststart": [fail, mark("poststart")],
        "poststop": [fail, mark("poststop")],
    });
    let (code, _, err) = run(&mut env, &b);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        fs::read_to_string(&log).unwrap_or_default(),
        "poststart\npoststop\n",
        "stderr: {err}"
    );
    assert!(err.contains("hooks.poststart[0]"), "{err}");
    assert!(err.contains("hooks.poststop[0]"), "{err}");
}

/// Each hook kind runs where runc runs it (runc's hooks inherit the cwd of the process that
/// runs them): createContainer in the container's root before pivot_root (runc's
/// prepareRootfs chdirs there), startContainer in process.cwd, the runtime-namespace hooks of
/// `run` in the bundle (runc chdirs to --bundle).
#[test]
fn each_hook_kind_runs_in_runcs_working_directory() {
    let mut env = Env::new();
    let log = env.scratch.join("cwd.log");
    let hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {name} $(pwd -P) >> {}", log.display())]});
    let mut b = env.bundle("hookcwd", &["true"]);
    b.config["process"]["cwd"] = json!("/bin");
    b.config["hooks"] = json!({
        "prestart": [hook("prestart")],
        "createRuntime": [hook("createRuntime")],
        "createContainer": [hook("createContainer")],
        "startContainer": [hook("startContainer")],
        "poststart": [hook("poststart")],
        "poststop": [hook("poststop")],
    });
    b.config["mounts"].as_array_mut().unwrap().push(json!({"destination": env.scratch, "type": "bind", "source": env.scratch, "options": ["rbind"]}));
    let (code, _, err) = run(&mut env, &b);
    assert_eq!(code, 0, "{err}");
    let bundle = fs::canonicalize(&b.dir).unwrap();
    let root = fs::canonicalize(rootfs()).unwrap();
    let want = format!(
        "prestart {b}\ncreateRuntime {b}\ncreateContainer {r}\nstartContainer /bin\npoststart {b}\npoststop {b}\n",
        b = bundle.display(),
        r = root.display()
    );
    assert_eq!(fs::read_to_string(&log).unwrap(), want);

    // `start` and `delete` (runc does not chdir for them): poststart and poststop run in the
    // caller's cwd; create's hooks still in the bundle.
    fs::remove_file(&log).unwrap();
    let id = env.id("hookcwd");
    let (ok, err) = env.quiet(&["create", "--bundle", b.path(), &id]);
    assert!(ok, "{err}");
    let caller = fs::canonicalize(&env.scratch).unwrap();
    for verb in ["start", "delete"] {
        let st = env
            .lrun()
            .args([verb, &id])
            .current_dir(&caller)
            .status()
            .unwrap();
        assert!(st.success(), "{verb}");
        if verb == "start" {
            // The container runs `true`: wait for it to stop before deleting it.
            for _ in 0..200 {
                if env.status(&id) == "stopped" {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
    let want = format!(
        "prestart {b}\ncreateRuntime {b}\ncreateContainer {r}\nstartContainer /bin\npoststart {c}\npoststop {c}\n",
        b = bundle.display(),
        r = root.display(),
        c = caller.display()
    );
    assert_eq!(fs::read_to_string(&log).unwrap(), want);
}

/// Issue 14 item 2: the state each hook reads on stdin (runtime-spec/design.md, "Hooks' state"):
/// `created` for prestart, createRuntime, createContainer and startContainer (the runtime
/// environment exists, the program has not run: runtime.md's lifecycle, as crun for the first
/// three and runc for startContainer), `running` for poststart, `stopped` for poststop; every
/// one with the init's host pid but poststop's (the init is gone).
#[test]
fn each_hook_reads_the_state_of_its_lifecycle_step() {
    let mut env = Env::new();
    let log = env.scratch.join("state.log");
    let hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {name} $(cat) >> {}", log.display())]});
    let mut b = env.bundle("hookstate", &["true"]);
    b.config["hooks"] = json!({
        "prestart": [hook("prestart")],
        "createRuntime": [hook("createRuntime")],
        "createContainer": [hook("createContainer")],
        "startContainer": [hook("startContainer")],
        "poststart": [hook("poststart")],
        "poststop": [hook("poststop")],
    });
    b.config["mounts"].as_array_mut().unwrap().push(json!({"destination": env.scratch, "type": "bind", "source": env.scratch, "options": ["rbind"]}));
    b.write();
    let id = env.id("hookstate");
    let (ok, err) = env.quiet(&["create", "--bundle", b.path(), &id]);
    assert!(ok, "{err}");
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    let (ok, err) = env.quiet(&["start", &id]);
    assert!(ok, "{err}");
    for _ in 0..500 {
        if env.status(&id) == "stopped" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let (ok, err) = env.quiet(&["delete", &id]);
    assert!(ok, "{err}");
    let text = fs::read_to_string(&log).unwrap();
    let got: Vec<(String, String, i64)> = text
        .lines()
        .map(|l| {
            let (name, json) = l.split_once(' ').unwrap();
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            assert_eq!(v["id"], json!(id), "{l}");
            (
                name.to_string(),
                v["status"].as_str().unwrap().to_string(),
                v["pid"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    let want: Vec<(String, String, i64)> = [
        ("prestart", "created", pid),
        ("createRuntime", "created", pid),
        ("createContainer", "created", pid),
        ("startContainer", "created", pid),
        ("poststart", "running", pid),
        ("poststop", "stopped", 0),
    ]
    .iter()
    .map(|(n, s, p)| (n.to_string(), s.to_string(), *p))
    .collect();
    // poststop: whatever pid the state keeps is fine; only the status matters there.
    assert_eq!(got[..5], want[..5], "{text}");
    assert_eq!((&got[5].0, &got[5].1), (&want[5].0, &want[5].1), "{text}");
}

/// As runc (its hooks.bats "startContainer hook should inherit process environment"): a
/// startContainer hook without an env of its own gets the process's; one with its own, only it.
#[test]
fn a_start_container_hook_without_env_inherits_the_processs() {
    let mut env = Env::new();
    let log = env.scratch.join("env.log");
    let hook = |name: &str| format!("echo {name} ONE=$ONE OWN=$OWN >> {}", log.display());
    let mut b = env.bundle("hookenv", &["true"]);
    b.config["process"]["env"] = json!(["PATH=/bin", "ONE=two"]);
    b.config["hooks"] = json!({"startContainer": [
        {"path": "/bin/sh", "args": ["sh", "-c", hook("inherited")]},
        {"path": "/bin/sh", "args": ["sh", "-c", hook("own")], "env": ["OWN=yes"]},
    ]});
    b.config["mounts"].as_array_mut().unwrap().push(json!({"destination": env.scratch, "type": "bind", "source": env.scratch, "options": ["rbind"]}));
    let (code, _, err) = run(&mut env, &b);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        "inherited ONE=two OWN=\nown ONE= OWN=yes\n"
    );
}

/// process.apparmorProfile, process.selinuxLabel and linux.mountLabel on a kernel without the
/// module: `create` (and `exec --apparmor`) refuse with one line naming the field, before
/// anything exists. Running the container unconfined instead would defeat the config.
#[test]
fn an_lsm_the_kernel_lacks_is_refused_naming_the_field() {
    if lrun::lsm::apparmor_enabled() || lrun::lsm::selinux_enabled() {
        return lrun::test_support::skip("this kernel has AppArmor or SELinux on");
    }
    let mut env = Env::new();
    type SetField = fn(&mut serde_json::Value);
    let cases: [(&str, SetField); 3] = [
        ("process.apparmorProfile", |c| {
            c["process"]["apparmorProfile"] = json!("lrun-test")
        }),
        ("process.selinuxLabel", |c| {
            c["process"]["selinuxLabel"] = json!("system_u:system_r:container_t:s0")
        }),
        ("linux.mountLabel", |c| {
            c["linux"]["mountLabel"] = json!("system_u:object_r:container_file_t:s0")
        }),
    ];
    let mut ids = Vec::new();
    for (field, set) in cases {
        let mut b = env.bundle("lsm", &["true"]);
        set(&mut b.config);
        b.write();
        let id = env.id("lsm");
        let (code, err) = env.quiet_code(&["create", "--bundle", b.path(), &id]);
        assert_ne!(code, 0, "{field}: create succeeded");
        assert_eq!(err.trim().lines().count(), 1, "{field}: {err}");
        assert!(err.contains(field) && err.contains("not"), "{field}: {err}");
        ids.push(id);
    }
    assert_no_leaks(&env.root, &ids);

    // exec's flags ask for the same.
    let b = env.bundle("lsmx", &["sleep", "1000"]);
    b.write();
    let id = env.id("lsmx");
    let (ok, err) = env.quiet(&["run", "-d", "--bundle", b.path(), &id]);
    assert!(ok, "{err}");
    let (code, err) = env.quiet_code(&["exec", "--apparmor", "lrun-test", &id, "true"]);
    assert!(env.quiet(&["delete", "--force", &id]).0);
    assert_ne!(code, 0, "exec --apparmor succeeded");
    assert!(err.contains("process.apparmorProfile"), "{err}");
}

/// A bind source below a host directory only the host's root may enter (0700): the init, as
/// root of its user namespace (host uid 100000), cannot traverse it, so `create` opens the
/// source before the namespace exists (as runc does). It used to fail with EACCES.
#[test]
fn a_bind_source_in_a_root_only_directory_mounts_in_a_user_namespace() {
    use std::os::unix::fs::PermissionsExt;
    let mut env = Env::new();
    let private = env.scratch.join("private");
    fs::create_dir_all(private.join("data")).unwrap();
    fs::write(private.join("data/file"), "reached\n").unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
    let out = sh(
        &mut env,
        |b| {
            b.config["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "user"}));
            b.config["linux"]["uidMappings"] =
                json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
            b.config["linux"]["gidMappings"] =
                json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
            let mounts = b.config["mounts"].as_array_mut().unwrap();
            for m in mounts.iter_mut() {
                if m["type"] == "sysfs" {
                    *m = json!({"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
                }
            }
            mounts.retain(|m| m["type"] != "cgroup");
            mounts.push(json!({"destination": "/mnt", "type": "bind",
                "source": private.join("data"), "options": ["bind", "ro"]}));
        },
        "cat /mnt/file; touch /mnt/x 2>/dev/null || echo read-only",
    );
    assert_eq!(out, "reached\nread-only\n");
}

/// config-linux.md: "If a file already exists at path that does not match the requested device,
/// the runtime MUST generate an error." /dev/null (1:3) is there before linux.devices: asking
/// for 1:5 at that path fails create naming the device; asking for 1:3 is fine.
#[test]
fn a_listed_device_whose_path_holds_another_file_fails_create() {
    let mut env = Env::new();
    let mut b = env.bundle("devx", &["true"]);
    b.config["linux"]["devices"] =
        json!([{"path": "/dev/null", "type": "c", "major": 1, "minor": 5}]);
    b.write();
    let id = env.id("devx");
    let (code, err) = env.quiet_code(&["create", "--bundle", b.path(), &id]);
    assert_ne!(code, 0, "create succeeded");
    assert!(
        err.contains("linux.devices /dev/null: a different file is already there"),
        "{err}"
    );
    assert_no_leaks(&env.root, &[id]);
    let mut b = env.bundle("devok", &["true"]);
    b.config["linux"]["devices"] =
        json!([{"path": "/dev/null", "type": "c", "major": 1, "minor": 3}]);
    let (code, _, err) = run(&mut env, &b);
    assert_eq!(code, 0, "{err}");
}

/// runtime.md lifecycle: a failing prestart (or createRuntime, createContainer) hook makes the
/// runtime "stop the container, and continue the lifecycle at step 12": the container is
/// destroyed and the poststop hooks (step 13) run, with the state "stopped". lrun ran none.
#[test]
fn a_failing_create_hook_still_runs_the_poststop_hooks() {
    let mut env = Env::new();
    let mark = env.scratch.join("poststop.json");
    let mut b = env.bundle("ppstop", &["true"]);
    b.config["hooks"] = json!({
        "prestart": [{"path": "/bin/false"}],
        "poststop": [{"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}", mark.display())]}]
    });
    b.write();
    let id = env.id("ppstop");
    let (code, err) = env.quiet_code(&["create", "--bundle", b.path(), &id]);
    assert_ne!(code, 0, "create succeeded");
    assert!(err.contains("hooks.prestart[0]"), "{err}");
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(&mark).expect("poststop did not run")).unwrap();
    assert_eq!(state["status"], "stopped");
    assert_eq!(state["id"], id.as_str());
    assert_no_leaks(&env.root, &[id]);
}

/// lrun started without CAP_SETPCAP (whoever runs it dropped it from its bounding set, as
/// a nested or confined runtime may be) still runs a container whose bounding set keeps all
/// that lrun holds: capabilities already gone are not "dropped" again, which the kernel
/// refuses without CAP_SETPCAP.
#[test]
fn without_cap_setpcap_a_bounding_set_lrun_already_fits_is_accepted() {
    let mut env = Env::new();
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
        .unwrap();
    let gone = [caps::Capability::CAP_SETPCAP, caps::Capability::CAP_SYSLOG];
    let keep: Vec<String> = caps::all()
        .into_iter()
        .filter(|c| bnd & (1 << c.index()) != 0 && !gone.contains(c))
        .map(|c| c.to_string())
        .collect();
    let mut b = env.bundle("nosetpcap", &["sh", "-c", "grep CapBnd /proc/self/status"]);
    b.config["process"]["capabilities"] =
        json!({"bounding": keep, "effective": keep, "permitted": keep});
    b.write();
    let id = env.id("nosetpcap");
    let out = std::process::Command::new("setpriv")
        .args(["--bounding-set", "-setpcap,-syslog", "--", LRUN, "--root"])
        .arg(&env.root)
        .args(["run", "--bundle", b.path(), &id])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run setpriv");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = bnd & !gone.iter().map(|c| 1u64 << c.index()).sum::<u64>();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("CapBnd:\t{want:016x}\n")
    );
}
