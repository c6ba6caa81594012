//! `lrun features`: what this runtime supports, as runtime-spec's features.md describes.

use serde_json::json;

use super::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {}

/// Every option rootfs::mounts::parse_options knows (config.md's MUST and SHOULD lists, the
/// recursive r* attributes included).
const MOUNT_OPTIONS: &[&str] = &[
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "iversion",
    "lazytime",
    "loud",
    "mand",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "noiversion",
    "nolazytime",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "nosymfollow",
    "private",
    "ratime",
    "rbind",
    "rdev",
    "rdiratime",
    "relatime",
    "remount",
    "rexec",
    "rnoatime",
    "rnodev",
    "rnodiratime",
    "rnoexec",
    "rnorelatime",
    "rnostrictatime",
    "rnosuid",
    "rnosymfollow",
    "ro",
    "rprivate",
    "rrelatime",
    "rro",
    "rrw",
    "rshared",
    "rslave",
    "rstrictatime",
    "rsuid",
    "rsymfollow",
    "runbindable",
    "rw",
    "shared",
    "silent",
    "slave",
    "strictatime",
    "suid",
    "symfollow",
    "sync",
    "tmpcopyup",
    "unbindable",
];

pub fn run(_g: &Globals, _a: Args) -> anyhow::Result<i32> {
    let caps: Vec<String> = caps::runtime::thread_all_supported()
        .iter()
        .map(|c| c.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let doc = json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.1",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": MOUNT_OPTIONS,
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": true, "systemdUser": false, "rdma": true},
            "seccomp": crate::seccomp::features(),
            // features-linux.md: whether the runtime supports the module, "irrelevant to
            // the availability of AppArmor on the host" (`lsm::check` refuses it there).
            "apparmor": {"enabled": true},
            "selinux": {"enabled": true},
            "intelRdt": {"enabled": false},
            // bundle.rs refuses idmapped mounts (uidMappings/gidMappings on a mount).
            "mountExtensions": {"idmap": {"enabled": false}}
        },
        "annotations": {
            "org.lrun.layers": "layered root filesystems (runtime-spec/bundle.md)"
        }
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_listed_mount_option_is_known() {
        for o in super::MOUNT_OPTIONS {
            // A bind mount refuses unknown options; tmpcopyup is for tmpfs.
            let typ = if *o == "tmpcopyup" { "tmpfs" } else { "bind" };
            let parsed = crate::rootfs::mounts::parse_options(typ, &[o.to_string()]);
            assert!(parsed.is_ok_and(|p| p.data.is_empty()), "{o}");
        }
    }
}
