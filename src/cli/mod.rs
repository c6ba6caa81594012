//! The command line: runc-compatible global flags and subcommands, one file per command.

mod create;
mod delete;
mod exec;
mod features;
mod gc;
mod image;
mod kill;
pub mod layer;
mod list;
mod net;
mod pause;
mod ps;
mod run;
mod spec;
mod start;
mod state;
mod update;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::container::CreateOptions;

use crate::logging::{self, LogFormat};
use crate::node_config::NodeConfig;

/// Default state root, as runc uses /run/runc.
pub const DEFAULT_ROOT: &str = "/run/lrun";

#[derive(Parser, Debug)]
#[command(
    name = "lrun",
    version,
    about = "OCI container runtime with layered read-only root filesystems"
)]
pub struct Cli {
    /// Directory for container state (tmpfs recommended) [default: the node config's `root`,
    /// else /run/lrun].
    #[arg(long, global = true, env = "LRUN_ROOT")]
    pub root: Option<PathBuf>,
    /// Node store of layer images (content-addressed) [default: the node config's `store`,
    /// else /var/lib/lrun].
    #[arg(long, global = true, env = "LRUN_STORE")]
    pub store: Option<PathBuf>,
    /// Node configuration file (runtime-spec/node-config.md) [default: /etc/lrun/lrun.toml].
    #[arg(long, global = true, value_name = "FILE", env = "LRUN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Write errors and debug messages to this file instead of stderr.
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Format of the log file.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Print debug messages and full error chains.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Put new containers in transient systemd scopes (cgroupsPath is "slice:prefix:name").
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    /// Accepted for runc compatibility (checkpointing is not supported).
    #[arg(long, global = true, hide = true)]
    pub criu: Option<String>,
    /// Accepted for runc compatibility.
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "auto")]
    pub rootless: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

// Each subcommand's flags are built only when it is the one invoked: building all of them
// was most of a `create`'s heap (~270 KB of clap's argument tables) and a good part of
// its start-up.
#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum Command {
    /// Create a container: set everything up and hold the process until `start`.
    Create(CreateArgs),
    /// Run the user process of a created container.
    Start(start::Args),
    /// Print the OCI state of a container as JSON.
    State(state::Args),
    /// Send a signal to the container's init process.
    Kill(kill::Args),
    /// Delete a container and release everything it holds.
    Delete(delete::Args),
    /// Create and start a container, wait for it and return its exit code.
    Run(run::Args),
    /// Run a new process inside a running container.
    Exec(exec::Args),
    /// List containers.
    #[command(alias = "ls")]
    List(list::Args),
    /// Write a default config.json.
    Spec(spec::Args),
    /// Print the features this runtime supports as JSON.
    Features(features::Args),
    /// Freeze all processes of a container.
    Pause(pause::Args),
    /// Thaw a paused container.
    Resume(pause::Args),
    /// List the processes of a container.
    Ps(ps::Args),
    /// Print container resource statistics and events.
    Events(update::EventsArgs),
    /// Change the resource limits of a running container.
    Update(update::Args),
    /// Remove what crashed creates left behind (and stopped containers with --stopped).
    Gc(gc::Args),
    /// Build, inspect, store and garbage-collect layer images.
    #[command(subcommand)]
    Layer(LayerVerbs),
    /// Import OCI images as layer images and a layered bundle.
    #[command(subcommand)]
    Image(image::ImageCommand),
}

/// `lrun layer`'s verbs: the local ones (`cli/layer.rs`) and those that reach the network
/// (`cli/net.rs`, run by the helper binary).
#[derive(Subcommand, Debug)]
pub enum LayerVerbs {
    // Plain comments on the flattened variants: with `defer`, a doc comment here would
    // replace the subcommands' own help lines.
    #[command(flatten)]
    Local(layer::LayerCommand),
    #[command(flatten)]
    Net(net::NetLayerCommand),
}

/// A command line that needs the network code.
#[derive(Debug)]
pub enum NetVerb {
    Layer(net::NetLayerCommand),
    Image(image::ImageCommand),
}

/// Where a binary runs the network verbs and create's remote pulls.
#[derive(Clone, Copy)]
pub struct NetCode {
    pub verb: fn(&Globals, NetVerb) -> anyhow::Result<i32>,
    pub pull: crate::distribution::RemotePull,
}

/// The runtime binary, `lrun`: in the helper, exec'd (verbs) or spawned (create's pull).
pub const VIA_HELPER: NetCode = NetCode {
    verb: |_, _| crate::helper::exec_verb(),
    pull: crate::helper::pull,
};

/// The helper binary, `lrun-fetch`: here.
pub const IN_PROCESS: NetCode = NetCode {
    verb: |g, v| match v {
        NetVerb::Layer(c) => net::run(g, c),
        NetVerb::Image(c) => image::run(g, c),
    },
    pull: crate::distribution::pull::pull_from,
};

impl Command {
    /// For the commands that start a container process: how many fds from 3 it passes on
    /// (`--preserve-fds`, LISTEN_FDS). Every other fd the caller left open is closed.
    fn passed_fds(&self) -> Option<i32> {
        let listen = crate::container::socket_activation_fds;
        match self {
            Command::Create(a) => Some(a.preserve_fds.max(listen())),
            Command::Run(a) => Some(a.create.preserve_fds.max(listen())),
            Command::Exec(a) => Some(a.preserve_fds),
            _ => None,
        }
    }
}

// The flags of `create`, which `run` shares. (A plain comment: a doc comment here would
// become the `about` of every subcommand using these flags once clap builds them late.)
#[derive(clap::Args, Debug)]
#[group(id = "create_args")]
pub struct CreateArgs {
    /// Bundle directory (config.json and the root filesystem).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Unix socket to receive the pty master of a terminal container.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Write the container's init pid here.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Use MS_MOVE + chroot instead of pivot_root (for a rootfs on a ramdisk).
    #[arg(long)]
    pub no_pivot: bool,
    /// Accepted for runc compatibility: lrun creates no session keyring.
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass this many extra fds (from 3 up) to the container process.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: i32,
    /// First fetch the bundle's missing layers from this directory, http(s):// URL or
    /// docker://HOST[:PORT]/REPO registry [default: the node config's `pull.source`].
    #[arg(long, value_name = "SOURCE", env = "LRUN_PULL_SOURCE")]
    pub pull: Option<String>,
    pub id: String,
}

// How to reach an OCI registry (`docker://…` sources and targets), as skopeo spells it.
// (A plain comment, as for CreateArgs.)
#[derive(clap::Args, Debug, Clone)]
pub struct RegistryArgs {
    /// Registry credentials [default: the auth files podman, skopeo and docker write:
    /// $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json].
    #[arg(long, value_name = "USER:PASS")]
    pub creds: Option<String>,
    /// Also trust the CA certificates (*.crt) in this directory [default:
    /// /etc/containers/certs.d/HOST[:PORT] and /etc/docker/certs.d/HOST[:PORT]].
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Verify the registry's TLS certificate; --tls-verify=false for test registries only.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub tls_verify: bool,
}

impl RegistryArgs {
    pub fn options(&self) -> crate::distribution::registry::RegistryOptions {
        crate::distribution::registry::RegistryOptions {
            creds: self.creds.clone(),
            cert_dir: self.cert_dir.clone(),
            tls_verify: self.tls_verify,
        }
    }
}

impl CreateArgs {
    pub fn options(&self, foreground: bool) -> CreateOptions<'_> {
        CreateOptions {
            id: &self.id,
            bundle: &self.bundle,
            pid_file: self.pid_file.as_deref(),
            console_socket: self.console_socket.as_deref(),
            no_pivot: self.no_pivot,
            preserve_fds: self.preserve_fds,
            foreground,
            pull: self.pull.as_deref(),
        }
    }
}

/// Global options every command needs.
pub struct Globals {
    pub root: PathBuf,
    pub store: PathBuf,
    pub debug: bool,
    /// Where `create`/`run` fetch missing layers when `--pull` is not given.
    pub pull_source: Option<String>,
    /// Pull limits before `--stall-timeout`/`--deadline`: defaults < node config < env.
    pub pull_limits: crate::distribution::Limits,
    /// `--systemd-cgroup`.
    pub systemd_cgroup: bool,
    /// Idle layer mounts: defaults < node config < env.
    pub idle_layers: crate::layers::IdlePolicy,
    /// create's `--pull` from a server or registry (`NetCode`).
    pub remote_pull: crate::container::RemotePull,
}

impl Globals {
    /// Each setting from its flag or environment variable (clap has merged those two), else
    /// the node configuration file, else the built-in default.
    pub fn resolve(
        root: Option<PathBuf>,
        store: Option<PathBuf>,
        debug: bool,
        node: NodeConfig,
        getenv: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Globals> {
        let pull_limits = node.pull_limits(&getenv)?;
        let idle_layers = node.idle_layers(&getenv)?;
        Ok(Globals {
            root: root
                .or(node.root)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT)),
            store: store
                .or(node.store)
                .unwrap_or_else(|| PathBuf::from(crate::layers::DEFAULT_STORE)),
            debug,
            pull_source: node.pull_source,
            pull_limits,
            systemd_cgroup: false,
            idle_layers,
            remote_pull: VIA_HELPER.pull,
        })
    }

    pub fn runtime(&self) -> crate::container::Runtime {
        crate::container::Runtime {
            root: self.root.clone(),
            store: self.store.clone(),
            pull_limits: self.pull_limits,
            systemd_cgroup: self.systemd_cgroup,
            idle_layers: self.idle_layers,
            remote_pull: self.remote_pull,
        }
    }
}

/// The command line. `linked`: where the verbs that need the network run (`VIA_HELPER` in
/// the runtime binary, `IN_PROCESS` in the helper).
pub fn main(linked: NetCode) -> i32 {
    let mut cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    // Before anything else, and before any clone or setns into a container's namespaces.
    if let Err(e) = crate::container::secure_process(cli.command.passed_fds()) {
        eprintln!("lrun: {e:#}");
        return 1;
    }
    logging::init(cli.log.as_deref(), cli.log_format, cli.debug);
    // runc exits 255 when `exec` fails (so a caller can tell it from the process's own exit
    // status) and 1 for every other failure.
    let failure_code = match cli.command {
        Command::Exec(_) => 255,
        _ => 1,
    };
    let mut globals = match NodeConfig::load(cli.config.as_deref()).and_then(|node| {
        Globals::resolve(cli.root, cli.store, cli.debug, node, |k| {
            std::env::var(k).ok()
        })
    }) {
        Ok(g) => g,
        Err(e) => {
            logging::error(&e);
            return failure_code;
        }
    };
    globals.systemd_cgroup = cli.systemd_cgroup;
    globals.remote_pull = linked.pull;
    // `--pull` / LRUN_PULL_SOURCE, else the node config's source.
    if let Command::Create(a) | Command::Run(run::Args { create: a, .. }) = &mut cli.command
        && a.pull.is_none()
    {
        a.pull = globals.pull_source.clone();
    }
    let result = match cli.command {
        Command::Create(a) => create::run(&globals, a),
        Command::Start(a) => start::run(&globals, a),
        Command::State(a) => state::run(&globals, a),
        Command::Kill(a) => kill::run(&globals, a),
        Command::Delete(a) => delete::run(&globals, a),
        Command::Run(a) => run::run(&globals, a),
        Command::Exec(a) => exec::run(&globals, a),
        Command::List(a) => list::run(&globals, a),
        Command::Spec(a) => spec::run(&globals, a),
        Command::Features(a) => features::run(&globals, a),
        Command::Pause(a) => pause::pause(&globals, a),
        Command::Resume(a) => pause::resume(&globals, a),
        Command::Ps(a) => ps::run(&globals, a),
        Command::Events(a) => update::events(&globals, a),
        Command::Update(a) => update::run(&globals, a),
        Command::Gc(a) => gc::run(&globals, a),
        Command::Layer(LayerVerbs::Net(c)) => (linked.verb)(&globals, NetVerb::Layer(c)),
        Command::Layer(LayerVerbs::Local(c)) => layer::run(&globals, c),
        Command::Image(c) => (linked.verb)(&globals, NetVerb::Image(c)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            logging::error(&e);
            failure_code
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn flags_win_over_the_node_config_which_wins_over_defaults() {
        use super::{DEFAULT_ROOT, Globals, NodeConfig};
        use std::path::{Path, PathBuf};
        let node = NodeConfig::parse("root = \"/run/node\"\nstore = \"/srv/node\"\n").unwrap();
        let g = Globals::resolve(None, None, false, node.clone(), |_| None).unwrap();
        assert_eq!(g.root, Path::new("/run/node"));
        assert_eq!(g.store, Path::new("/srv/node"));
        let g = Globals::resolve(Some(PathBuf::from("/r")), None, false, node, |_| None).unwrap();
        assert_eq!(g.root, Path::new("/r"));
        assert_eq!(g.store, Path::new("/srv/node"));
        let g = Globals::resolve(None, None, false, NodeConfig::default(), |_| None).unwrap();
        assert_eq!(g.root, Path::new(DEFAULT_ROOT));
        assert_eq!(g.store, Path::new(crate::layers::DEFAULT_STORE));
        assert_eq!(g.pull_source, None);
    }

    #[test]
    fn runc_style_invocations_parse() {
        use clap::Parser;
        for argv in [
            &[
                "lrun",
                "--root",
                "/tmp/x",
                "--log-format",
                "json",
                "create",
                "--bundle",
                "b",
                "--pid-file",
                "p",
                "c1",
            ][..],
            &["lrun", "kill", "c1", "9"],
            &["lrun", "delete", "--force", "c1"],
            &["lrun", "run", "-d", "--bundle", "b", "c1"],
            &["lrun", "spec", "--rootless"],
            &["lrun", "--systemd-cgroup", "list", "--format", "json"],
        ] {
            super::Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        }
    }

    #[test]
    fn subcommands_built_late_keep_their_own_help_line() {
        let mut cmd = super::Cli::command();
        cmd.build();
        let about = |path: &[&str]| {
            let mut c = &cmd;
            for p in path {
                c = c.find_subcommand(p).unwrap();
            }
            c.get_about().map(|a| a.to_string()).unwrap_or_default()
        };
        assert!(about(&["create"]).starts_with("Create a container"));
        assert!(about(&["run"]).starts_with("Create and start a container"));
        assert!(about(&["layer", "pull"]).starts_with("Fetch layers"));
        assert!(about(&["layer", "publish"]).starts_with("Copy layer images"));
        assert!(about(&["image", "import"]).starts_with("Turn an OCI image layout"));
    }

    #[test]
    fn global_flags_count_after_a_subcommand_whose_flags_are_built_late() {
        use clap::Parser;
        for argv in [
            &["lrun", "create", "--root", "/x", "--bundle", "b", "c1"][..],
            &["lrun", "layer", "pull", "--root", "/x", "dir", "a@1"],
            &[
                "lrun",
                "image",
                "import",
                "--root",
                "/x",
                "l",
                "--name",
                "n",
                "--version",
                "1",
            ],
        ] {
            let cli = super::Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            assert_eq!(
                cli.root.as_deref(),
                Some(std::path::Path::new("/x")),
                "{argv:?}"
            );
        }
        // A subcommand's own flags are still checked.
        assert!(super::Cli::try_parse_from(["lrun", "create", "--nope", "c1"]).is_err());
        assert!(
            super::Cli::try_parse_from(["lrun", "layer", "pull", "--nope", "d", "a@1"]).is_err()
        );
    }
}
