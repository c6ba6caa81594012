//! The node configuration file, /etc/lrun/lrun.toml: node-wide defaults for the settings that
//! otherwise come from flags or environment variables. Engines start the runtime with an
//! environment of their own (conmon, the containerd shim), so an `LRUN_STORE` set for a user's
//! shell never reaches the lrun an engine runs; this file does. Precedence, for each key:
//! flag > environment > this file > built-in default. runtime-spec/node-config.md.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use toml::Spanned;

use crate::distribution::limits::{Limits, deadline_from_secs, stall_from_secs};
use crate::layers::IdlePolicy;

/// Where lrun looks when neither `--config` nor `LRUN_CONFIG` names a file.
pub const DEFAULT_PATH: &str = "/etc/lrun/lrun.toml";

/// A configuration file larger than this is refused (it is a few lines).
const MAX_SIZE: u64 = 1 << 20;

/// The file as written: every key optional; an unknown key is an error (a misspelt key must
/// not fall back to a default silently).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    root: Option<Spanned<PathBuf>>,
    store: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pull: PullFile,
    #[serde(default)]
    layers: LayersFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LayersFile {
    idle_timeout: Option<Spanned<f64>>,
    idle_max: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PullFile {
    source: Option<Spanned<String>>,
    stall_timeout: Option<Spanned<f64>>,
    deadline: Option<Spanned<f64>>,
}

/// The settings a node configuration file gives (`None`: the file does not set it).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct NodeConfig {
    /// The state root (`--root`, `LRUN_ROOT`).
    pub root: Option<PathBuf>,
    /// The layer store (`--store`, `LRUN_STORE`).
    pub store: Option<PathBuf>,
    /// Where `create`/`run` fetch the layers a layered bundle names that the store lacks
    /// (`--pull`, `LRUN_PULL_SOURCE`).
    pub pull_source: Option<String>,
    /// `pull.stall_timeout` (`--stall-timeout`, `LRUN_PULL_STALL_TIMEOUT`).
    pub pull_stall: Option<Duration>,
    /// `pull.deadline`, `Some(None)` for "no deadline" (`--deadline`, `LRUN_PULL_DEADLINE`).
    pub pull_deadline: Option<Option<Duration>>,
    /// `layers.idle_timeout` (`LRUN_LAYER_IDLE_TIMEOUT`): seconds an idle layer stays mounted.
    pub idle_timeout: Option<Duration>,
    /// `layers.idle_max` (`LRUN_LAYER_IDLE_MAX`): how many idle layers stay mounted.
    pub idle_max: Option<usize>,
}

impl NodeConfig {
    /// The file `--config` or `LRUN_CONFIG` names (`named`), else DEFAULT_PATH. A missing
    /// default file is an empty configuration; a file named explicitly must exist.
    pub fn load(named: Option<&Path>) -> Result<NodeConfig> {
        match named {
            Some(p) => NodeConfig::read(p, true),
            None => NodeConfig::read(Path::new(DEFAULT_PATH), false),
        }
    }

    /// Read and check one file. `required`: whether a missing file is an error.
    pub fn read(path: &Path, required: bool) -> Result<NodeConfig> {
        let shown = path.display();
        // Checked on the open file, not on a second lookup of the path.
        let mut f = match fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(NodeConfig::default());
            }
            Err(e) => return Err(e).with_context(|| format!("config file {shown}")),
        };
        let m = f
            .metadata()
            .with_context(|| format!("config file {shown}: fstat"))?;
        if let Some(problem) = trust_problem(&m, false) {
            bail!("config file {shown} {problem}: refusing it (lrun runs as root and obeys it)");
        }
        let mut text = String::new();
        (&mut f)
            .take(MAX_SIZE + 1)
            .read_to_string(&mut text)
            .with_context(|| format!("config file {shown}: read"))?;
        if text.len() as u64 > MAX_SIZE {
            bail!("config file {shown}: larger than {MAX_SIZE} bytes");
        }
        NodeConfig::parse(&text).map_err(|e| anyhow!("config file {shown}:{e}"))
    }

    /// Parse the text of a configuration file. Errors read `LINE: message` (one line).
    pub fn parse(text: &str) -> std::result::Result<NodeConfig, String> {
        let line = |at: Option<std::ops::Range<usize>>| match at {
            Some(r) => format!(
                "{}",
                text[..r.start.min(text.len())].matches('\n').count() + 1
            ),
            None => "?".into(),
        };
        let file: File = toml::from_str(text).map_err(|e| {
            format!(
                "{}: {}",
                line(e.span()),
                e.message().lines().next().unwrap_or("malformed").trim()
            )
        })?;
        let at = |span: std::ops::Range<usize>, key: &str, e: anyhow::Error| {
            format!("{}: {key}: {e:#}", line(Some(span)))
        };
        let absolute = |v: Option<Spanned<PathBuf>>, key: &str| -> std::result::Result<_, String> {
            match v {
                Some(p) if !p.get_ref().is_absolute() => Err(at(
                    p.span(),
                    key,
                    anyhow!("{:?} is not an absolute path", p.get_ref()),
                )),
                Some(p) => Ok(Some(p.into_inner())),
                None => Ok(None),
            }
        };
        let root = absolute(file.root, "root")?;
        let store = absolute(file.store, "store")?;
        let pull_source = match file.pull.source {
            Some(s) if s.get_ref().trim().is_empty() => {
                return Err(at(s.span(), "pull.source", anyhow!("empty")));
            }
            s => s.map(Spanned::into_inner),
        };
        let pull_stall = match file.pull.stall_timeout {
            Some(v) => Some(
                stall_from_secs(*v.get_ref()).map_err(|e| at(v.span(), "pull.stall_timeout", e))?,
            ),
            None => None,
        };
        let pull_deadline = match file.pull.deadline {
            Some(v) => Some(
                deadline_from_secs(*v.get_ref()).map_err(|e| at(v.span(), "pull.deadline", e))?,
            ),
            None => None,
        };
        let idle_timeout = match file.layers.idle_timeout {
            Some(v) => Some(
                idle_timeout_from_secs(*v.get_ref())
                    .map_err(|e| at(v.span(), "layers.idle_timeout", e))?,
            ),
            None => None,
        };
        let idle_max =
            match file.layers.idle_max {
                Some(v) => Some(usize::try_from(*v.get_ref()).map_err(|_| {
                    at(v.span(), "layers.idle_max", anyhow!("must not be negative"))
                })?),
                None => None,
            };
        Ok(NodeConfig {
            root,
            store,
            pull_source,
            pull_stall,
            pull_deadline,
            idle_timeout,
            idle_max,
        })
    }

    /// The pull limits: the built-in defaults, then this file's values, then the environment
    /// (as `getenv` reads it; `--stall-timeout`/`--deadline` go over the result).
    pub fn pull_limits(&self, getenv: impl Fn(&str) -> Option<String>) -> Result<Limits> {
        let mut l = Limits::default();
        if let Some(s) = self.pull_stall {
            l.stall = s;
        }
        if let Some(d) = self.pull_deadline {
            l.deadline = d;
        }
        l.env_over(getenv)
    }
}

impl NodeConfig {
    /// The idle layer policy: the built-in default, then this file's values, then the
    /// environment (as `getenv` reads it).
    pub fn idle_layers(&self, getenv: impl Fn(&str) -> Option<String>) -> Result<IdlePolicy> {
        let mut p = IdlePolicy::DEFAULT;
        if let Some(t) = self.idle_timeout {
            p.timeout = t;
        }
        if let Some(m) = self.idle_max {
            p.max = m;
        }
        if let Some(v) = getenv("LRUN_LAYER_IDLE_TIMEOUT") {
            let secs: f64 = v.trim().parse().map_err(|_| {
                anyhow!("LRUN_LAYER_IDLE_TIMEOUT: {v:?} is not a number of seconds")
            })?;
            p.timeout = idle_timeout_from_secs(secs).context("LRUN_LAYER_IDLE_TIMEOUT")?;
        }
        if let Some(v) = getenv("LRUN_LAYER_IDLE_MAX") {
            p.max = v
                .trim()
                .parse()
                .map_err(|_| anyhow!("LRUN_LAYER_IDLE_MAX: {v:?} is not a count"))?;
        }
        Ok(p)
    }
}

/// An idle timeout in seconds: 0 unmounts a layer with its last reference.
fn idle_timeout_from_secs(secs: f64) -> Result<Duration> {
    if !secs.is_finite() || secs < 0.0 {
        bail!("{secs} is not a number of seconds (0 or more)");
    }
    Duration::try_from_secs_f64(secs).map_err(|e| anyhow!("{secs}: {e}"))
}

/// Why lrun must not obey this file, or None. Root obeys it, so whoever can change it can
/// choose the store and state root root uses: it must be a regular file owned by root (or by
/// the user running lrun) that neither its group nor others can write. The same holds for
/// the helper binary lrun executes and its directory (`dir`: a directory is expected).
pub(crate) fn trust_problem(m: &fs::Metadata, dir: bool) -> Option<String> {
    let me = rustix::process::geteuid().as_raw();
    if dir && !m.is_dir() {
        return Some("is not a directory".into());
    }
    if !dir && !m.is_file() {
        return Some("is not a regular file".into());
    }
    if m.uid() != 0 && m.uid() != me {
        return Some(format!("is owned by uid {}, not root", m.uid()));
    }
    if m.mode() & 0o022 != 0 {
        return Some(format!(
            "is writable by its group or others (mode {:o})",
            m.mode() & 0o7777
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const FULL: &str = r#"
# a node's defaults
root = "/run/lrun-node"
store = "/srv/lrun/store"

[pull]
source = "https://layers.example/lrun"
stall_timeout = 12.5
deadline = 0
"#;

    #[test]
    fn every_key_parses() {
        let c = NodeConfig::parse(FULL).unwrap();
        assert_eq!(c.root.as_deref(), Some(Path::new("/run/lrun-node")));
        assert_eq!(c.store.as_deref(), Some(Path::new("/srv/lrun/store")));
        assert_eq!(
            c.pull_source.as_deref(),
            Some("https://layers.example/lrun")
        );
        assert_eq!(c.pull_stall, Some(Duration::from_millis(12500)));
        assert_eq!(c.pull_deadline, Some(None));
    }

    #[test]
    fn empty_file_sets_nothing() {
        assert_eq!(NodeConfig::parse("").unwrap(), NodeConfig::default());
        assert_eq!(
            NodeConfig::parse("# nothing\n\n[pull]\n").unwrap(),
            NodeConfig::default()
        );
    }

    #[test]
    fn integer_seconds_are_accepted() {
        let c = NodeConfig::parse("[pull]\nstall_timeout = 3\ndeadline = 60\n").unwrap();
        assert_eq!(c.pull_stall, Some(Duration::from_secs(3)));
        assert_eq!(c.pull_deadline, Some(Some(Duration::from_secs(60))));
    }

    #[test]
    fn unknown_key_is_refused_with_its_name_and_line() {
        let e = NodeConfig::parse("root = \"/run/x\"\nstor = \"/srv\"\n").unwrap_err();
        assert!(e.starts_with("2: unknown field `stor`"), "{e}");
        let e = NodeConfig::parse("[pull]\nsource = \"/d\"\ndeadlin = 3\n").unwrap_err();
        assert!(e.starts_with("3: unknown field `deadlin`"), "{e}");
        let e = NodeConfig::parse("[pul]\n").unwrap_err();
        assert!(e.contains("unknown field `pul`"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn malformed_file_names_the_line() {
        let e = NodeConfig::parse("root = \"/run/x\"\n\nstore = /srv\n").unwrap_err();
        assert!(e.starts_with("3: "), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
        let e = NodeConfig::parse("store = 3\n").unwrap_err();
        assert!(e.starts_with("1: "), "{e}");
    }

    #[test]
    fn bad_values_name_the_key_and_line() {
        let e = NodeConfig::parse("\nstore = \"relative/store\"\n").unwrap_err();
        assert!(e.starts_with("2: store: "), "{e}");
        assert!(e.contains("not an absolute path"), "{e}");
        let e = NodeConfig::parse("[pull]\nstall_timeout = 0\n").unwrap_err();
        assert!(e.starts_with("2: pull.stall_timeout: "), "{e}");
        let e = NodeConfig::parse("[pull]\ndeadline = -1\n").unwrap_err();
        assert!(e.starts_with("2: pull.deadline: "), "{e}");
        let e = NodeConfig::parse("[pull]\nsource = \" \"\n").unwrap_err();
        assert!(e.starts_with("2: pull.source: "), "{e}");
    }

    #[test]
    fn idle_layer_policy_takes_the_file_over_defaults_and_the_environment_over_the_file() {
        let none = NodeConfig::default();
        assert_eq!(none.idle_layers(|_| None).unwrap(), IdlePolicy::DEFAULT);
        let c = NodeConfig::parse("[layers]\nidle_timeout = 30\nidle_max = 8\n").unwrap();
        let p = c.idle_layers(|_| None).unwrap();
        assert_eq!((p.timeout, p.max), (Duration::from_secs(30), 8));
        let p = c
            .idle_layers(|k| (k == "LRUN_LAYER_IDLE_TIMEOUT").then(|| "0".into()))
            .unwrap();
        assert!(!p.keeps());
        let e = c
            .idle_layers(|k| (k == "LRUN_LAYER_IDLE_MAX").then(|| "-2".into()))
            .unwrap_err();
        assert!(
            format!("{e:#}").starts_with("LRUN_LAYER_IDLE_MAX: "),
            "{e:#}"
        );
        let e = NodeConfig::parse("[layers]\nidle_timeout = -1\n").unwrap_err();
        assert!(e.starts_with("2: layers.idle_timeout: "), "{e}");
        let e = NodeConfig::parse("[layers]\nidle_max = -1\n").unwrap_err();
        assert!(e.starts_with("2: layers.idle_max: "), "{e}");
    }

    #[test]
    fn pull_limits_take_the_file_over_defaults_and_the_environment_over_the_file() {
        let c = NodeConfig::parse("[pull]\nstall_timeout = 5\n").unwrap();
        let l = c.pull_limits(|_| None).unwrap();
        assert_eq!(l.stall, Duration::from_secs(5));
        assert_eq!(l.deadline, Limits::default().deadline);
        let l = c
            .pull_limits(|k| (k == "LRUN_PULL_STALL_TIMEOUT").then(|| "9".into()))
            .unwrap();
        assert_eq!(l.stall, Duration::from_secs(9));
        assert_eq!(
            NodeConfig::default().pull_limits(|_| None).unwrap(),
            Limits::default()
        );
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lrun-nodecfg-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn missing_default_file_is_empty_but_a_named_one_must_exist() {
        let d = scratch("missing");
        let p = d.join("lrun.toml");
        assert_eq!(NodeConfig::read(&p, false).unwrap(), NodeConfig::default());
        let e = NodeConfig::read(&p, true).unwrap_err();
        assert!(format!("{e:#}").contains(&p.display().to_string()), "{e:#}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn file_errors_name_the_file_and_line() {
        let d = scratch("errors");
        let p = d.join("lrun.toml");
        fs::write(&p, "store = \"/srv\"\nbogus = 1\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let e = format!("{:#}", NodeConfig::read(&p, true).unwrap_err());
        assert!(
            e.starts_with(&format!(
                "config file {}:2: unknown field `bogus`",
                p.display()
            )),
            "{e}"
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn writable_config_file_is_refused() {
        let d = scratch("writable");
        let p = d.join("lrun.toml");
        fs::write(&p, "store = \"/srv\"\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(NodeConfig::read(&p, true).is_ok());
        for mode in [0o666, 0o664] {
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            let e = format!("{:#}", NodeConfig::read(&p, true).unwrap_err());
            assert!(e.contains("writable by its group or others"), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let e = format!("{:#}", NodeConfig::read(&d, true).unwrap_err());
        assert!(e.contains("not a regular file"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn config_file_owned_by_another_user_is_refused() {
        if !rustix::process::geteuid().is_root() {
            crate::test_support::skip("needs root");
            return;
        }
        let d = scratch("owner");
        let p = d.join("lrun.toml");
        fs::write(&p, "store = \"/srv\"\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::chown(&p, Some(65534), None).unwrap();
        let e = format!("{:#}", NodeConfig::read(&p, true).unwrap_err());
        assert!(e.contains("owned by uid 65534, not root"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }
}
