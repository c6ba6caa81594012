//! `lrun exec ID [--process FILE | ARGS...]`, with runc's flags.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use oci_spec::runtime::{Capability, LinuxCapabilities, Process};

use super::Globals;
use crate::cgroups;
use crate::container::{self, ExecOptions};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A JSON file with the process to run (runtime-spec `process` object).
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Return once the process has started.
    #[arg(short, long)]
    pub detach: bool,
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Extra environment variables (KEY=VALUE).
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// UID[:GID] to run as.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Additional group ids.
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<u32>,
    /// Add a capability (e.g. CAP_NET_ADMIN).
    #[arg(short, long = "cap")]
    pub cap: Vec<String>,
    #[arg(long)]
    pub no_new_privs: bool,
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: i32,
    /// Run the process in an existing sub-cgroup of the container's:
    /// [CONTROLLER[,CONTROLLER...]:]PATH (repeatable, one per controller, on cgroup v1).
    #[arg(long)]
    pub cgroup: Vec<String>,
    /// Allow exec in a paused container.
    #[arg(long)]
    pub ignore_paused: bool,
    /// SELinux label for the process (process.selinuxLabel).
    #[arg(long)]
    pub process_label: Option<String>,
    /// AppArmor profile for the process (process.apparmorProfile).
    #[arg(long)]
    pub apparmor: Option<String>,
    pub id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

pub fn run(g: &Globals, a: Args) -> Result<i32> {
    let rt = g.runtime();
    let process = match &a.process {
        Some(path) => {
            let text =
                std::fs::read(path).with_context(|| format!("--process {}", path.display()))?;
            process_from_file(&text).with_context(|| format!("--process {}", path.display()))?
        }
        None => from_flags(
            &a,
            container::container_spec(&rt, &a.id)?
                .process()
                .clone()
                .unwrap_or_default(),
        )?,
    };
    container::exec(
        &rt,
        ExecOptions {
            id: &a.id,
            process,
            detach: a.detach,
            pid_file: a.pid_file.as_deref(),
            console_socket: a.console_socket.as_deref(),
            preserve_fds: a.preserve_fds,
            sub_cgroups: sub_cgroups(&a.cgroup)?,
            ignore_paused: a.ignore_paused,
        },
    )
}

/// `--cgroup` arguments as runc's `getSubCgroupPaths` takes them: CONTROLLER[,...]:PATH, or
/// a single PATH (key "", for cgroup v2 or every v1 hierarchy).
fn sub_cgroups(args: &[String]) -> Result<cgroups::SubCgroups> {
    let mut paths = cgroups::SubCgroups::new();
    for arg in args {
        match arg.split_once(':') {
            Some((ctrls, path)) => {
                for c in ctrls.split(',') {
                    if c.is_empty() {
                        bail!("invalid --cgroup argument: {arg} (empty <controller> prefix)");
                    }
                    if paths.insert(c.to_string(), path.to_string()).is_some() {
                        bail!(
                            "invalid --cgroup argument(s): controller {c} specified multiple times"
                        );
                    }
                }
            }
            None if args.len() != 1 => {
                bail!("invalid --cgroup argument: {arg} (missing <controller>: prefix)")
            }
            None => {
                paths.insert(String::new(), arg.clone());
            }
        }
    }
    Ok(paths)
}

/// A `--process` file as runc reads it: Go's decoder leaves what is missing at its zero value
/// (no `user` is uid 0, gid 0, where oci-spec requires the field), then runc's
/// `validateProcessSpec` wants an absolute cwd and some args.
fn process_from_file(text: &[u8]) -> Result<Process> {
    let mut v: serde_json::Value = serde_json::from_slice(text)?;
    if let Some(obj) = v.as_object_mut() {
        for (key, zero) in [
            ("user", serde_json::json!({})),
            ("cwd", serde_json::json!("")),
        ] {
            match obj.get(key) {
                None | Some(serde_json::Value::Null) => {
                    obj.insert(key.to_string(), zero);
                }
                Some(_) => {}
            }
        }
    }
    let p: Process = serde_json::from_value(v)?;
    if p.cwd().as_os_str().is_empty() {
        bail!("Cwd property must not be empty");
    }
    if !p.cwd().is_absolute() {
        bail!("Cwd must be an absolute path");
    }
    if p.args().as_ref().is_none_or(|a| a.is_empty()) {
        bail!("args must not be empty");
    }
    Ok(p)
}

/// The container's own process settings, overridden by the flags (as runc does).
fn from_flags(a: &Args, mut p: Process) -> Result<Process> {
    if a.command.is_empty() {
        bail!("exec: give a command or --process FILE");
    }
    p.set_args(Some(a.command.clone()));
    p.set_terminal(Some(a.tty));
    let mut env = p.env().clone().unwrap_or_default();
    for kv in &a.env {
        let key = kv.split('=').next().unwrap_or(kv);
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    p.set_env(Some(env));
    if let Some(cwd) = &a.cwd {
        p.set_cwd(cwd.clone());
    }
    if let Some(profile) = a.apparmor.as_ref().filter(|s| !s.is_empty()) {
        p.set_apparmor_profile(Some(profile.clone()));
    }
    if let Some(label) = a.process_label.as_ref().filter(|s| !s.is_empty()) {
        p.set_selinux_label(Some(label.clone()));
    }
    if let Some(u) = a.user.as_ref().filter(|s| !s.is_empty()) {
        // As runc: UID alone keeps the config's gid; UID:GID sets both.
        let mut user = p.user().clone();
        let (uid, gid) = match u.split_once(':') {
            Some((uid, gid)) => (uid, Some(gid)),
            None => (u.as_str(), None),
        };
        if let Some(gid) = gid {
            user.set_gid(
                gid.parse()
                    .with_context(|| format!("--user {u}: bad gid"))?,
            );
        }
        user.set_uid(
            uid.parse()
                .with_context(|| format!("--user {u}: bad uid"))?,
        );
        p.set_user(user);
    }
    if !a.additional_gids.is_empty() {
        // Added to the config's, as runc does.
        let mut user = p.user().clone();
        let mut gids = user.additional_gids().clone().unwrap_or_default();
        gids.extend(&a.additional_gids);
        user.set_additional_gids(Some(gids));
        p.set_user(user);
    }
    if !a.cap.is_empty() {
        // Not LinuxCapabilities::default(), which fills every set, the inheritable and
        // ambient ones included (CVE-2022-29162): --cap adds to bounding, effective and
        // permitted only.
        let mut caps = p.capabilities().clone().unwrap_or_else(no_capabilities);
        for name in &a.cap {
            let cap: Capability = serde_json::from_value(serde_json::json!(name))
                .with_context(|| format!("--cap {name}: unknown capability"))?;
            let mut b = caps.bounding().clone().unwrap_or_default();
            b.insert(cap);
            caps.set_bounding(Some(b));
            let mut e = caps.effective().clone().unwrap_or_default();
            e.insert(cap);
            caps.set_effective(Some(e));
            let mut pm = caps.permitted().clone().unwrap_or_default();
            pm.insert(cap);
            caps.set_permitted(Some(pm));
        }
        p.set_capabilities(Some(caps));
    }
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    Ok(p)
}

/// A capabilities object with every set empty.
fn no_capabilities() -> LinuxCapabilities {
    let mut c = LinuxCapabilities::default();
    c.set_bounding(None)
        .set_effective(None)
        .set_inheritable(None)
        .set_permitted(None)
        .set_ambient(None);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn a_process_file_without_user_runs_as_root_like_runcs() {
        let p = process_from_file(br#"{"args": ["true"], "cwd": "/"}"#).expect("no user");
        assert_eq!((p.user().uid(), p.user().gid()), (0, 0));
        let p = process_from_file(br#"{"args": ["true"], "cwd": "/", "user": null}"#).unwrap();
        assert_eq!((p.user().uid(), p.user().gid()), (0, 0));
        let p = process_from_file(br#"{"args": ["id"], "cwd": "/", "user": {"uid": 7}}"#).unwrap();
        assert_eq!((p.user().uid(), p.user().gid()), (7, 0));
        for (text, want) in [
            (r#"{"args": ["true"]}"#, "Cwd property must not be empty"),
            (
                r#"{"args": ["true"], "cwd": "tmp"}"#,
                "Cwd must be an absolute path",
            ),
            (r#"{"cwd": "/"}"#, "args must not be empty"),
            (r#"{"args": [], "cwd": "/"}"#, "args must not be empty"),
        ] {
            let err = process_from_file(text.as_bytes()).unwrap_err().to_string();
            assert_eq!(err, want, "{text}");
        }
    }

    #[test]
    fn cgroup_flags_parse_like_runcs() {
        let parse = |v: &[&str]| sub_cgroups(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let m = parse(&["memory:submem", "cpu,cpuacct:subcpu"]).unwrap();
        let want: Vec<(&str, &str)> = vec![
            ("cpu", "subcpu"),
            ("cpuacct", "subcpu"),
            ("memory", "submem"),
        ];
        assert_eq!(
            m.iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
            want
        );
        assert_eq!(parse(&["/sub"]).unwrap().get(""), Some(&"/sub".to_string()));
        assert!(parse(&[]).unwrap().is_empty());
        for (args, want) in [
            (&[":x"][..], "empty <controller> prefix"),
            (
                &["cpu:a", "cpu:b"],
                "controller cpu specified multiple times",
            ),
            (&["a", "cpu:b"], "missing <controller>: prefix"),
        ] {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(want), "{args:?}: {err}");
        }
        let a = Cli::parse_from(["exec", "--cgroup", "a", "--ignore-paused", "id", "sh"]).args;
        assert!(a.ignore_paused);
        assert_eq!(a.cgroup, ["a"]);
    }

    #[test]
    fn cap_flag_adds_nothing_to_inheritable_or_ambient() {
        let a = Cli::parse_from(["exec", "--cap", "CAP_KILL", "id", "sh"]).args;
        let mut p = Process::default();
        p.set_capabilities(None);
        let p = from_flags(&a, p).expect("flags");
        let c = p.capabilities().clone().expect("capabilities");
        let kill = Some([Capability::Kill].into_iter().collect());
        assert_eq!(c.bounding(), &kill);
        assert_eq!(c.effective(), &kill);
        assert_eq!(c.permitted(), &kill);
        assert_eq!(c.inheritable(), &None);
        assert_eq!(c.ambient(), &None);
    }

    #[test]
    fn user_flag_keeps_the_configs_gid_like_runcs() {
        let mut base = Process::default();
        let mut u = base.user().clone();
        u.set_uid(1).set_gid(7).set_additional_gids(Some(vec![9]));
        base.set_user(u);
        let flags = |v: &[&str]| {
            let mut argv = vec!["exec"];
            argv.extend(v);
            argv.extend(["id", "sh"]);
            from_flags(&Cli::parse_from(argv).args, base.clone())
        };
        let p = flags(&["--user", "1000"]).unwrap();
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 7));
        let p = flags(&["--user", "1000:5", "-g", "10"]).unwrap();
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 5));
        assert_eq!(p.user().additional_gids(), &Some(vec![9, 10]));
        assert!(flags(&["--user", "x"]).is_err());
        let p = flags(&["--apparmor", "prof", "--process-label", "l"]).unwrap();
        assert_eq!(p.apparmor_profile().as_deref(), Some("prof"));
        assert_eq!(p.selinux_label().as_deref(), Some("l"));
    }
}
