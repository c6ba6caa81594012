//! The OCI bundle: config.json loading and the checks that must fail before anything is created.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::namespaces::Plan;

/// A loaded bundle: its directory (absolute) and parsed config.
pub struct Bundle {
    pub dir: PathBuf,
    pub spec: Spec,
    /// config.json as read, kept with the container's state for `exec`.
    pub raw: Vec<u8>,
}

impl Bundle {
    /// Load `DIR/config.json`. Errors name the file and, for JSON errors, the field path and
    /// line so a user can find the mistake.
    pub fn load(dir: &Path) -> Result<Self> {
        let dir = fs::canonicalize(dir).with_context(|| format!("bundle {}", dir.display()))?;
        let path = dir.join("config.json");
        let text = fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        let spec = parse_config(&text).with_context(|| format!("{}", path.display()))?;
        // Needs the namespace files (not pure), so here rather than in `validate`, which `exec`
        // also runs on the saved config.
        if let Some(linux) = spec.linux() {
            crate::sysctl::validate(linux).with_context(|| format!("{}", path.display()))?;
        }
        Ok(Bundle {
            dir,
            spec,
            raw: text,
        })
    }

    /// Every check `create` makes before its first side effect, in one pass: the config's own
    /// (done by `load`), then those that need the command's options or another module's
    /// knowledge (terminal, namespaces, seccomp). Returns what those checks computed, so
    /// nothing is worked out twice.
    pub fn check_for_create(&self, opts: &CreateChecks) -> Result<Checked> {
        let spec = &self.spec;
        let process = spec
            .process()
            .as_ref()
            .context("config.json: process is required")?;
        let terminal = process.terminal() == Some(true);
        check_terminal_options(terminal, opts.console_socket, opts.foreground)?;
        let linux = spec.linux().as_ref();
        let has_ns = |t| {
            linux
                .and_then(|l| l.namespaces().as_ref())
                .is_some_and(|v| v.iter().any(|n| n.typ() == t))
        };
        if !has_ns(LinuxNamespaceType::Mount) {
            check_without_mount_namespace(spec)?;
        }
        if (spec.hostname().is_some() || spec.domainname().is_some())
            && !has_ns(LinuxNamespaceType::Uts)
        {
            bail!("hostname: setting a hostname needs a uts namespace in linux.namespaces");
        }
        let plan = Plan::new(linux)?;
        // Compiled once here (cached across containers): the filter is checked before
        // anything exists, and the init only loads it.
        let seccomp = linux
            .and_then(|l| l.seccomp().as_ref())
            .map(|s| crate::seccomp::prepare_cached(s, opts.seccomp_cache))
            .transpose()?;
        crate::lsm::check(process, linux.and_then(|l| l.mount_label().as_deref()))?;
        Ok(Checked {
            plan,
            seccomp,
            terminal,
        })
    }

    /// The root directory as the spec says it: root.path relative to the bundle.
    pub fn rootfs(&self) -> Result<PathBuf> {
        let root = self
            .spec
            .root()
            .as_ref()
            .context("config.json: root is missing")?;
        let p = root.path();
        Ok(if p.is_absolute() {
            p.clone()
        } else {
            self.dir.join(p)
        })
    }
}

/// What `create` was asked for, beyond the bundle, that its checks depend on.
pub struct CreateChecks<'a> {
    pub console_socket: Option<&'a Path>,
    /// `run` in the foreground (a terminal is then proxied, no console socket needed).
    pub foreground: bool,
    /// Where compiled seccomp filters are cached.
    pub seccomp_cache: &'a Path,
}

/// What the checks worked out, for `create` to use.
pub struct Checked {
    pub plan: Plan,
    pub seccomp: Option<crate::seccomp::Filter>,
    /// process.terminal
    pub terminal: bool,
}

/// A container without a mount namespace shares the caller's (config-linux.md, "Namespaces"):
/// its root is a chroot and every mount it made would be made in the caller's namespace. runc
/// and crun make them and leave them there after delete; lrun makes none, so nothing can be
/// left behind, and refuses what would need one (the rootfs is used as it is: no /dev of
/// lrun's, no /proc unless the rootfs holds them).
fn check_without_mount_namespace(spec: &Spec) -> Result<()> {
    let why = "a container without a mount namespace (none in linux.namespaces) shares the \
               caller's, where lrun makes no mount it could not undo";
    if spec.mounts().as_ref().is_some_and(|m| !m.is_empty()) {
        bail!("field mounts: {why}: remove the mounts or add a mount namespace");
    }
    let linux = spec.linux().as_ref();
    let non_empty = |v: Option<&Vec<String>>| v.is_some_and(|v| !v.is_empty());
    if non_empty(linux.and_then(|l| l.masked_paths().as_ref())) {
        bail!("field linux.maskedPaths: {why}");
    }
    if non_empty(linux.and_then(|l| l.readonly_paths().as_ref())) {
        bail!("field linux.readonlyPaths: {why}");
    }
    if linux
        .and_then(|l| l.devices().as_ref())
        .is_some_and(|d| !d.is_empty())
    {
        bail!("field linux.devices: {why}");
    }
    if linux
        .and_then(|l| l.rootfs_propagation().as_ref())
        .is_some()
    {
        bail!("field linux.rootfsPropagation: {why} (it would change the caller's /)");
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        bail!("field root.readonly: {why}");
    }
    Ok(())
}

/// process.terminal against the command's options: a terminal needs somewhere to go.
pub fn check_terminal_options(
    terminal: bool,
    console_socket: Option<&Path>,
    foreground: bool,
) -> Result<()> {
    if terminal && console_socket.is_none() && !foreground {
        bail!("process.terminal is true: --console-socket is required (or run in the foreground)");
    }
    if !terminal && console_socket.is_some() {
        bail!("--console-socket given but process.terminal is false");
    }
    Ok(())
}

/// Parse and validate config.json text.
pub fn parse_config(text: &[u8]) -> Result<Spec> {
    let de = &mut serde_json::Deserializer::from_slice(text);
    let mut spec: Spec = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            anyhow::anyhow!("invalid JSON: {inner}")
        } else {
            anyhow::anyhow!("field {path}: {inner}")
        }
    })?;
    absolute_destinations(&mut spec);
    validate(&spec)?;
    Ok(spec)
}

/// config.md: a relative mount destination is allowed "for compatibility" and MUST be taken
/// as relative to "/" (runc does, with a warning).
fn absolute_destinations(spec: &mut Spec) {
    let Some(mut mounts) = spec.mounts().clone() else {
        return;
    };
    let mut changed = false;
    for m in &mut mounts {
        if m.destination().is_relative() {
            let abs = Path::new("/").join(m.destination());
            m.set_destination(abs);
            changed = true;
        }
    }
    if changed {
        spec.set_mounts(Some(mounts));
    }
}

/// Refuse what lrun cannot honour, naming the field.
fn validate(spec: &Spec) -> Result<()> {
    check_version(spec.version())?;
    if let Some(process) = spec.process() {
        if process.args().as_ref().is_none_or(|a| a.is_empty()) {
            bail!("field process.args: must name the program to run");
        }
        if !process.cwd().is_absolute() {
            bail!(
                "field process.cwd: {:?} must be an absolute path",
                process.cwd()
            );
        }
    }
    if let Some(linux) = spec.linux() {
        // runc's specconv refuses a type listed twice, of every type (a path or not), in
        // these words; the cgroup namespace is no exception.
        let mut seen = Vec::new();
        for ns in linux.namespaces().iter().flatten() {
            if seen.contains(&ns.typ()) {
                // The type as the config spells it ("network", where Display says "net").
                let name = serde_json::to_value(ns.typ()).unwrap_or_default();
                let name = name.as_str().unwrap_or_default();
                bail!("field linux.namespaces: malformed spec file: duplicated ns \"{name}\"");
            }
            seen.push(ns.typ());
        }
        let has_userns = seen.contains(&LinuxNamespaceType::User);
        let has_maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty());
        if has_maps && !has_userns {
            bail!("field linux.uidMappings: set without a user namespace");
        }
        if linux.time_offsets().is_some() && !seen.contains(&LinuxNamespaceType::Time) {
            bail!("field linux.timeOffsets: set without a time namespace");
        }
    }
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let idmap = m
            .options()
            .iter()
            .flatten()
            .any(|o| o == "idmap" || o == "ridmap");
        if idmap || m.uid_mappings().is_some() || m.gid_mappings().is_some() {
            bail!("field mounts[{i}]: idmapped mounts are not supported");
        }
        crate::rootfs::mounts::check_options(m).with_context(|| format!("field mounts[{i}]"))?;
    }
    refuse_unsupported(spec)?;
    check_hooks_and_rlimits(spec)?;
    check_linux_values(spec)?;
    Ok(())
}

/// config-linux.md's MUSTs on values (config.md "Valid values": invalid ones are an error).
fn check_linux_values(spec: &Spec) -> Result<()> {
    let Some(linux) = spec.linux() else {
        return Ok(());
    };
    let userns = linux
        .namespaces()
        .iter()
        .flatten()
        .any(|n| n.typ() == LinuxNamespaceType::User);
    if !userns && linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty()) {
        bail!("field linux.gidMappings: set without a user namespace");
    }
    for (field, paths) in [
        ("maskedPaths", linux.masked_paths()),
        ("readonlyPaths", linux.readonly_paths()),
    ] {
        for (i, p) in paths.iter().flatten().enumerate() {
            if !p.starts_with('/') {
                bail!("field linux.{field}[{i}]: {p:?} must be an absolute path");
            }
        }
    }
    let weights = linux
        .resources()
        .as_ref()
        .and_then(|r| r.block_io().as_ref())
        .and_then(|b| b.weight_device().as_ref());
    for (i, w) in weights.into_iter().flatten().enumerate() {
        if w.weight().is_none() && w.leaf_weight().is_none() {
            bail!("field linux.resources.blockIO.weightDevice[{i}]: needs weight or leafWeight");
        }
    }
    Ok(())
}

/// config.md's own MUSTs on hooks and rlimits: a hook's `path` is absolute and its `timeout`,
/// if set, above zero; no rlimit `type` twice (the last would silently win otherwise).
fn check_hooks_and_rlimits(spec: &Spec) -> Result<()> {
    if let Some(h) = spec.hooks() {
        #[allow(deprecated)] // prestart: deprecated by the spec, still run by every runtime.
        let kinds = [
            ("prestart", h.prestart()),
            ("createRuntime", h.create_runtime()),
            ("createContainer", h.create_container()),
            ("startContainer", h.start_container()),
            ("poststart", h.poststart()),
            ("poststop", h.poststop()),
        ];
        for (kind, hooks) in kinds {
            for (i, hook) in hooks.iter().flatten().enumerate() {
                if !hook.path().is_absolute() {
                    bail!(
                        "field hooks.{kind}[{i}].path: {:?} must be absolute",
                        hook.path()
                    );
                }
                if let Some(t) = hook.timeout().filter(|t| *t <= 0) {
                    bail!("field hooks.{kind}[{i}].timeout: {t} must be greater than zero");
                }
            }
        }
    }
    let mut seen = Vec::new();
    let rlimits = spec.process().as_ref().and_then(|p| p.rlimits().as_ref());
    for (i, r) in rlimits.into_iter().flatten().enumerate() {
        if seen.contains(&r.typ()) {
            let name = serde_json::to_value(r.typ()).unwrap_or_default();
            bail!(
                "field process.rlimits[{i}].type: {} is listed twice",
                name.as_str().unwrap_or_default()
            );
        }
        seen.push(r.typ());
    }
    Ok(())
}

/// Fields lrun cannot honour: refusing is better than running the container differently from
/// what the config asks.
fn refuse_unsupported(spec: &Spec) -> Result<()> {
    if let Some(linux) = spec.linux() {
        if linux.intel_rdt().is_some() {
            bail!("field linux.intelRdt: Intel RDT is not supported");
        }
        if linux.memory_policy().is_some() {
            bail!("field linux.memoryPolicy: NUMA memory policies are not supported");
        }
        if linux.net_devices().as_ref().is_some_and(|d| !d.is_empty()) {
            bail!("field linux.netDevices: moving network devices is not supported");
        }
        if linux
            .personality()
            .as_ref()
            .is_some_and(|p| p.flags().as_ref().is_some_and(|f| !f.is_empty()))
        {
            bail!("field linux.personality.flags: personality flags are not supported");
        }
    }
    if spec
        .process()
        .as_ref()
        .is_some_and(|p| p.exec_cpu_affinity().is_some())
    {
        bail!("field process.execCPUAffinity: not supported");
    }
    Ok(())
}

/// Accept every 1.x version, as runc does (the spec is backward compatible within a major).
fn check_version(v: &str) -> Result<()> {
    let major = v.split('.').next().unwrap_or("");
    if major != "1" {
        bail!("field ociVersion: {v:?} is not supported (lrun implements runtime-spec 1.x)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
        "process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}}}"#;

    #[test]
    fn minimal_config_parses() {
        let spec = parse_config(MINIMAL.as_bytes()).expect("parse");
        assert_eq!(spec.version(), "1.0.2");
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let text = MINIMAL.replace("\"root\"", "\"someFutureField\":{\"x\":1},\"root\"");
        assert!(parse_config(text.as_bytes()).is_ok());
    }

    #[test]
    fn unsupported_major_version_is_named() {
        let text = MINIMAL.replace("1.0.2", "2.0.0");
        let err = format!("{:#}", parse_config(text.as_bytes()).unwrap_err());
        assert!(err.contains("ociVersion"), "{err}");
    }

    #[test]
    fn malformed_json_reports_position() {
        let err = format!(
            "{:#}",
            parse_config(b"{\"ociVersion\": \"1.0\",").unwrap_err()
        );
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn unknown_namespace_names_the_field() {
        let text = MINIMAL.replace(
            "\"root\"",
            "\"linux\":{\"namespaces\":[{\"type\":\"bogus\"}]},\"root\"",
        );
        let err = format!("{:#}", parse_config(text.as_bytes()).unwrap_err());
        assert!(err.contains("linux.namespaces[0].type"), "{err}");
    }

    #[test]
    fn unsupported_features_are_refused_by_name() {
        let text = MINIMAL.replace(
            "\"root\"",
            "\"linux\":{\"intelRdt\":{\"closID\":\"x\"}},\"root\"",
        );
        let err = format!("{:#}", parse_config(text.as_bytes()).unwrap_err());
        assert!(err.contains("linux.intelRdt"), "{err}");
    }

    #[test]
    fn a_namespace_listed_twice_is_refused_in_runcs_words() {
        for (t, second) in [
            ("cgroup", r#"{"type":"cgroup"}"#),
            ("cgroup", r#"{"type":"cgroup","path":"/proc/1/ns/cgroup"}"#),
            ("pid", r#"{"type":"pid","path":"/proc/1/ns/pid"}"#),
            ("network", r#"{"type":"network"}"#),
        ] {
            let text = MINIMAL.replace(
                "\"root\"",
                &format!(r#""linux":{{"namespaces":[{{"type":"{t}"}},{second}]}},"root""#),
            );
            let err = format!("{:#}", parse_config(text.as_bytes()).unwrap_err());
            assert_eq!(
                err,
                format!("field linux.namespaces: malformed spec file: duplicated ns \"{t}\"")
            );
        }
    }

    #[test]
    fn empty_args_are_rejected() {
        let text = MINIMAL.replace("[\"sh\"]", "[]");
        assert!(parse_config(text.as_bytes()).is_err());
    }

    #[test]
    fn hooks_and_rlimits_follow_config_mds_musts() {
        let with = |patch: serde_json::Value| {
            let mut c: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
            for (k, v) in patch.as_object().unwrap() {
                c[k] = v.clone();
            }
            let text = serde_json::to_vec(&c).unwrap();
            parse_config(&text).and_then(|s| validate(&s).map(|_| s))
        };
        let err = |patch| format!("{:#}", with(patch).unwrap_err());
        assert_eq!(
            err(serde_json::json!({"hooks": {"poststop": [{"path": "bin/true"}]}})),
            "field hooks.poststop[0].path: \"bin/true\" must be absolute"
        );
        assert_eq!(
            err(serde_json::json!({"hooks": {"prestart": [{"path": "/bin/true", "timeout": 0}]}})),
            "field hooks.prestart[0].timeout: 0 must be greater than zero"
        );
        let nofile = serde_json::json!({"type": "RLIMIT_NOFILE", "hard": 10, "soft": 10});
        let mut process: serde_json::Value =
            serde_json::from_str::<serde_json::Value>(MINIMAL).unwrap()["process"].clone();
        process["rlimits"] = serde_json::json!([nofile, nofile]);
        assert_eq!(
            err(serde_json::json!({"process": process})),
            "field process.rlimits[1].type: RLIMIT_NOFILE is listed twice"
        );
        assert!(
            with(serde_json::json!({"hooks": {"prestart": [{"path": "/x", "timeout": 1}]}}))
                .is_ok()
        );
    }

    #[test]
    fn invalid_linux_values_are_refused_by_field() {
        let with_linux = |linux: serde_json::Value| {
            let mut c: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
            c["linux"] = linux;
            // parse_config validates.
            parse_config(&serde_json::to_vec(&c).unwrap())
                .map(drop)
                .map_err(|e| format!("{e:#}"))
        };
        let gid = serde_json::json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
        assert_eq!(
            with_linux(serde_json::json!({"gidMappings": gid})).unwrap_err(),
            "field linux.gidMappings: set without a user namespace"
        );
        assert_eq!(
            with_linux(serde_json::json!({"maskedPaths": ["/a", "proc/kcore"]})).unwrap_err(),
            "field linux.maskedPaths[1]: \"proc/kcore\" must be an absolute path"
        );
        assert_eq!(
            with_linux(serde_json::json!({"readonlyPaths": ["proc/sys"]})).unwrap_err(),
            "field linux.readonlyPaths[0]: \"proc/sys\" must be an absolute path"
        );
        let blkio = serde_json::json!({"blockIO": {"weightDevice": [{"major": 8, "minor": 0}]}});
        assert_eq!(
            with_linux(serde_json::json!({"resources": blkio})).unwrap_err(),
            "field linux.resources.blockIO.weightDevice[0]: needs weight or leafWeight"
        );
        let ok = serde_json::json!({"blockIO": {"weightDevice": [{"major": 8, "minor": 0, "weight": 10}]}});
        assert!(with_linux(serde_json::json!({"resources": ok, "maskedPaths": ["/x"]})).is_ok());
    }

    #[test]
    fn a_relative_mount_destination_is_relative_to_the_root() {
        let text = MINIMAL.replace(
            "\"root\"",
            "\"mounts\":[{\"destination\":\"mnt/x\",\"type\":\"tmpfs\"}],\"root\"",
        );
        let spec = parse_config(text.as_bytes()).expect("parse");
        let m = &spec.mounts().as_ref().unwrap()[0];
        assert_eq!(m.destination(), Path::new("/mnt/x"));
    }
}
