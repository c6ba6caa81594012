//! `create`: everything from the bundle to an init waiting for `start`, top to bottom.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use nix::fcntl::{OFlag, open};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use super::init::{self, InitArgs};
use super::{Runtime, write_pid_file};
use crate::bundle::{Bundle, Checked, CreateChecks};
use crate::cgroups;
use crate::hooks;
use crate::layers;
use crate::logging;
use crate::namespaces;
use crate::notify;
use crate::rootfs;
use crate::state::{self, ContainerState, FIFO_FILE, process_start_time};
use crate::sync::{self, Channel, Message};
use crate::utils::{self, Forked, SingleThreaded, clone_fork, validate_id, write_atomic};

#[derive(Clone)]
pub struct CreateOptions<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub pid_file: Option<&'a Path>,
    pub console_socket: Option<&'a Path>,
    pub no_pivot: bool,
    pub preserve_fds: i32,
    /// `run` in the foreground: the caller starts the container through the channel.
    pub foreground: bool,
    /// `--pull SOURCE`: first fetch the layers the bundle names that the store lacks.
    pub pull: Option<&'a str>,
}

/// A container that `create` finished: its init waits for `start`.
pub struct Created {
    pub dir: PathBuf,
    pub state: ContainerState,
    /// Open only for foreground runs (the start signal goes through it).
    pub channel: Option<Channel>,
    /// The pty master of a terminal container run in the foreground.
    pub pty: Option<OwnedFd>,
    /// The NOTIFY_SOCKET relay of a foreground run.
    pub relay: Option<notify::Relay>,
}

pub fn create(rt: &Runtime, opts: &CreateOptions) -> Result<Created> {
    validate_id(opts.id)?;
    // `--debug`: one line per step, as runc logs its own.
    let step = |what: std::fmt::Arguments| {
        if logging::debugging() {
            logging::debug(&format!("create {}: {what}", opts.id));
        }
    };
    // 1. Everything that can be checked without side effects, in one pass.
    let bundle = Bundle::load(opts.bundle)?;
    let spec = &bundle.spec;
    let Checked {
        plan,
        seccomp,
        terminal,
    } = bundle.check_for_create(&CreateChecks {
        console_socket: opts.console_socket,
        foreground: opts.foreground,
        seccomp_cache: &rt.root.join(".seccomp-cache"),
    })?;
    step(format_args!(
        "config.json of {} checked",
        bundle.dir.display()
    ));
    if !plan.mount_ns && notify::host_socket().is_some() {
        bail!(
            "NOTIFY_SOCKET: the notify socket is bind-mounted into the container, which needs a \
             mount namespace in linux.namespaces"
        );
    }
    let process = spec
        .process()
        .as_ref()
        .context("config.json: process is required")?;
    let linux = spec.linux().as_ref();
    let cgroups_path = linux.and_then(|l| l.cgroups_path().as_deref());
    let cgroup = match rt.systemd_cgroup {
        true => cgroups::new_systemd_driver(cgroups_path, opts.id, &rt.root)?,
        false => cgroups::new_driver(cgroups_path, opts.id)?,
    };
    let layer_spec = layers::layer_spec(spec)?;

    // 2. `--pull`: what the store lacks, before the id is claimed (the store is shared and
    // keeps what was fetched, whatever happens to this container).
    if let Some(source) = opts.pull
        && let Some(ls) = &layer_spec
    {
        pull_missing(rt, source, ls)?;
    }

    // 3. Claim the id: from here on, every failure goes through the guard.
    // Recorded as layered before the layers are taken: a create killed while they are mounted
    // leaves state that tells `delete --force` to release them.
    let layered = layer_spec.is_some();
    let states = rt.states();
    let dir = states.claim(opts.id)?;
    let lock = state::lock(&dir)?;
    step(format_args!("claimed {}", dir.display()));
    let mut guard = CreateGuard {
        rt,
        dir: dir.clone(),
        pids: Vec::new(),
        cgroup: None,
        layered,
        layers: None,
        poststop: None,
        done: false,
    };
    // A populated or frozen target cgroup is refused before the guard owns it (its cleanup
    // would destroy it, killing what is inside) and after the id is claimed (a duplicate id
    // is reported as such, though it names the same default cgroup).
    cgroup.preflight()?;
    let mut st = ContainerState {
        oci_version: spec.version().clone(),
        id: opts.id.to_string(),
        pid: 0,
        pid_start_time: 0,
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs()?,
        created: utils::rfc3339(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        ),
        owner: String::new(),
        annotations: spec.annotations().clone().unwrap_or_default(),
        created_ok: false,
        cgroups: cgroup.record(),
        layered,
        layers: None,
        hooks: spec.hooks().clone(),
        notify_socket: notify::host_socket(),
    };
    state::save(&dir, &st)?;
    // Only root may read it: process.env often carries secrets.
    write_atomic(&dir.join(state::CONFIG_FILE), &bundle.raw, 0o600)
        .context("save config.json with the state")?;

    // 4. Root filesystem: the layers (if any) mounted in the host namespace, shared; the
    // container's overlay on them is built detached and attached by the init in the
    // container's own mount namespace (the runtime's table then lists nothing per container).
    // The layered root's record is saved before anything is taken (see `prepare_root`).
    let mut record = |r: &layers::RootRecord| {
        st.layers = Some(r.clone());
        state::save(&dir, &st)
    };
    let mut root_mount = None;
    match &layer_spec {
        Some(ls) => {
            let root = layers::prepare_layered_root(
                &rt.layers(),
                &bundle.dir,
                spec,
                ls,
                &dir,
                &mut record,
            )?;
            guard.layers = st.layers.clone();
            st.rootfs = root.merged.clone();
            if plan.new_mount_ns() {
                root_mount = root.detached;
            } else {
                // The container shares the runtime's namespace, or joins one that outlives
                // it: its root is mounted on the host, where release_root unmounts it.
                root.attach_here()?;
            }
            // Saved with the final state: until then only the record (saved above, before
            // anything was taken) matters to `delete --force` and gc, and it names the
            // layers; the merged root's path is derived from the state directory.
            step(format_args!(
                "layered root built for {}{}",
                st.rootfs.display(),
                if root_mount.is_some() {
                    " (attached by the init in its namespace)"
                } else {
                    ""
                }
            ));
        }
        None => rootfs::check_exists(&st.rootfs)?,
    }

    // 5. cgroups, owned by the guard from here. A child born in its cgroup (pure v2, clone3)
    // needs it made first; otherwise they are made and set just after the clone, while the
    // child starts on its mounts: it joins them only when the parent writes cgroup.procs,
    // after that (a systemd scope is made with the first process: see `start` below).
    guard.cgroup = Some(cgroup.record());
    // Always applied: even without resources the device list has defaults to enforce.
    let no_resources = oci_spec::runtime::LinuxResources::default();
    let resources = linux
        .and_then(|l| l.resources().as_ref())
        .unwrap_or(&no_resources);
    let cgroups_first = cgroup.birth_cgroup().is_some();
    let make_cgroups = || -> Result<()> {
        cgroup.create()?;
        cgroup.set_for_create(resources)?;
        step(format_args!(
            "cgroups created and set ({:?})",
            st.cgroups.driver
        ));
        Ok(())
    };
    if cgroups_first {
        make_cgroups()?;
    }

    // 6. The exec fifo that holds the init until `start`, inherited by the init as an fd.
    let exec_fifo = match opts.foreground {
        true => None,
        false => Some(make_fifo(&dir.join(FIFO_FILE))?),
    };

    // 7. The container process.
    let listen_fds = socket_activation_fds();
    let notify_dir = dir.join("notify");
    let mut relay = None;
    if let Some(host) = &st.notify_socket {
        fs::create_dir(&notify_dir).with_context(|| format!("mkdir {}", notify_dir.display()))?;
        if opts.foreground {
            relay = Some(notify::Relay::bind(&notify_dir, host.clone())?);
        }
    }
    // In a user namespace the init may not reach sources the host's root can.
    let bind_sources = match plan.new_user || has_user_join(&plan) {
        true => crate::rootfs::mounts::open_bind_sources(spec, &bundle.dir)?,
        false => Vec::new(),
    };
    let (chan, child_chan) = sync::pair()?;
    let args = InitArgs {
        id: opts.id,
        spec,
        bundle: &bundle.dir,
        rootfs: &st.rootfs,
        plan: &plan,
        exec_fifo: exec_fifo.as_ref(),
        lock_fd: lock.raw_fd(),
        foreground: opts.foreground,
        no_pivot: opts.no_pivot,
        preserve_fds: opts.preserve_fds.max(listen_fds),
        listen_fds,
        notify_dir: st.notify_socket.as_ref().map(|_| notify_dir.as_path()),
        seccomp: seccomp.as_ref(),
        bind_sources: &bind_sources,
        root_mount: root_mount.as_ref(),
    };
    // The child only runs init code and then execs or exits.
    let one_thread = SingleThreaded::check()?;
    // On cgroup v2 the child is born in its cgroup (no cgroup.procs write, no wait for the
    // threadgroup lock that write takes: runtime-spec/cgroups.md).
    let birth = match cgroup.birth_cgroup() {
        Some(dir) => Some(
            rustix::fs::open(
                dir,
                rustix::fs::OFlags::RDONLY
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(std::io::Error::from)
            .with_context(|| format!("open {}", dir.display()))?,
        ),
        None => None,
    };
    let (forked, born_in_cgroup) = match &birth {
        Some(fd) => utils::clone_fork_into(&one_thread, plan.clone_flags, fd.as_fd())?,
        None => (clone_fork(&one_thread, plan.clone_flags)?, false),
    };
    let first = match forked {
        Forked::Child(one_thread) => {
            // No host directory fd may reach the container's process.
            drop(birth);
            drop(chan);
            init::child_main(&args, &one_thread, child_chan);
        }
        Forked::Parent(pid) => pid,
    };
    drop(birth);
    drop(child_chan);
    // The init holds its own copy of the detached root until it has attached it; if it dies
    // before, the mount goes with its fd.
    drop(root_mount);
    // Only the init may hold the fifo open: `start` waits for the last writer to go.
    drop(exec_fifo);
    guard.pids.push(first);
    step(format_args!("cloned the first child, pid {first}"));
    if !cgroups_first && let Err(e) = make_cgroups() {
        // As for a failed join below: the child goes before the channel closes.
        let _ = nix::sys::signal::kill(Pid::from_raw(first), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(first), None);
        return Err(e);
    }

    // With one direct clone the namespaces exist already: no need to wait for the child,
    // which meanwhile starts on the mounts that do not depend on its cgroup.
    if !plan.direct {
        chan.expect(Message::NeedParentSetup)?;
    }
    if plan.new_user {
        namespaces::write_id_maps(
            first,
            linux.context("linux is required for a user namespace")?,
        )?;
    }
    if plan.new_time
        && let Some(l) = linux
    {
        namespaces::write_time_offsets(first, l)?;
    }
    // Written by the parent (the init it forks inherits it): lrun is non-dumpable, so its
    // children's /proc files are root's, out of reach of the root of a user namespace.
    if let Some(adj) = process.oom_score_adj() {
        fs::write(format!("/proc/{first}/oom_score_adj"), adj.to_string())
            .with_context(|| format!("process.oomScoreAdj {adj}"))?;
    }
    if !born_in_cgroup && let Err(e) = cgroup.start(first, resources) {
        // The child goes before the channel closes (it would report the closed channel as
        // an error of its own): the error is this one.
        let _ = nix::sys::signal::kill(Pid::from_raw(first), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(first), None);
        return Err(e);
    }
    step(format_args!(
        "parent set-up done (id maps: {}, time offsets: {}, cgroups joined{})",
        plan.new_user,
        plan.new_time,
        if born_in_cgroup { " at clone" } else { "" }
    ));
    // A child that failed meanwhile closed its end: its error is the next message read.
    let _ = chan.send(&Message::ParentSetupDone);
    let pid = if plan.fork_init {
        let pid = match chan.recv()? {
            Message::InitPid(p) => p,
            Message::Error(e) => bail!("{e}"),
            m => bail!("sync protocol: unexpected {m:?}"),
        };
        guard.pids.push(pid);
        let _ = waitpid(Pid::from_raw(first), None);
        pid
    } else {
        first
    };
    // Recorded with the final state only: until then the init dies with this process
    // (pdeathsig), so a crash leaves no process for `delete --force` to find.
    st.pid = pid;

    if let Some(h) = spec.hooks().as_ref().and_then(|h| h.poststop().clone()) {
        // From here (the container process exists, the hooks are next) a failed create
        // continues the lifecycle at its end (runtime.md steps 3-5: "continue the lifecycle
        // at step 12"; step 13 runs poststop hooks). runc's destroy runs them for any failure.
        let json = hooks::hook_state(opts.id, "stopped", pid, &bundle.dir, spec);
        guard.poststop = Some((h, json, bundle.dir.clone()));
    }
    if hooks::needs_runtime_hooks(spec) {
        chan.expect(Message::RunRuntimeHooks)?;
        if let Some(h) = spec.hooks() {
            // "created": the runtime environment exists (runtime.md lifecycle step 2 is done),
            // as crun says; runc says "creating" (runtime-spec/design.md, "Hooks' state").
            let json = hooks::hook_state(opts.id, "created", pid, &bundle.dir, spec);
            // runc runs these in `create` (or `run`), which chdirs to the bundle.
            let cwd = Some(bundle.dir.as_path());
            hooks::run_all("prestart", h.prestart().as_ref(), &json, cwd)?;
            hooks::run_all("createRuntime", h.create_runtime().as_ref(), &json, cwd)?;
        }
        chan.send(&Message::RuntimeHooksDone(pid))?;
        step(format_args!("prestart and createRuntime hooks ran"));
    }
    let pty = match terminal {
        true => super::console::receive_pty(&chan, opts.console_socket)?,
        false => None,
    };
    chan.expect(Message::Ready)?;
    step(format_args!(
        "init {pid} ready: root entered, identity and capabilities set, program found"
    ));

    // 8. Done: record it, and only then let go of the guard.
    st.pid_start_time =
        process_start_time(pid).context("the container process exited during create")?;
    st.created_ok = true;
    state::save(&dir, &st)?;
    // Until this arrives the init dies with us: see init::init_steps.
    chan.send(&Message::Created)?;
    step(format_args!(
        "recorded as created; the init waits for start"
    ));
    if let Some(p) = opts.pid_file {
        write_pid_file(p, pid)?;
    }
    guard.done = true;
    drop(lock);
    Ok(Created {
        dir,
        state: st,
        channel: opts.foreground.then_some(chan),
        pty,
        relay,
    })
}

/// `--pull`: fetch the layers a layered bundle names (and their dependencies) that the store
/// lacks. Paths name local files, which create imports itself.
fn pull_missing(rt: &Runtime, source: &str, ls: &layers::LayerSpec) -> Result<()> {
    let refs: Vec<_> = ls
        .tops
        .iter()
        .filter(|r| !matches!(r, layers::LayerRef::Path(_)))
        .cloned()
        .collect();
    if refs.is_empty() {
        return Ok(());
    }
    if crate::distribution::is_network(source) {
        return (rt.remote_pull)(&rt.pull_target(), source, &refs);
    }
    let transfer = crate::distribution::limits::Transfer::start(rt.pull_limits);
    let src = crate::distribution::dir::DirSource::new(source, transfer)?;
    let store = layers::Store::new(&rt.store);
    crate::distribution::pull::pull(&store, &src, &refs, &Default::default())?;
    Ok(())
}

/// systemd socket activation: LISTEN_FDS sockets from fd 3, meant for us if LISTEN_PID is
/// ours (or absent, as some supervisors leave it).
pub fn socket_activation_fds() -> i32 {
    let fds = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0);
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .is_none_or(|p| p == std::process::id());
    if for_us { fds.max(0) } else { 0 }
}

/// Make the exec fifo and open it for the init. O_RDWR never blocks on a fifo, and the init
/// needs no path lookup (nor /proc) inside the container: only root ever opens it by path.
fn make_fifo(path: &Path) -> Result<OwnedFd> {
    nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o600))
        .with_context(|| format!("mkfifo {}", path.display()))?;
    open(path, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .with_context(|| format!("open {}", path.display()))
}

/// Releases what a failed `create` took, in reverse order.
struct CreateGuard<'a> {
    rt: &'a Runtime,
    dir: PathBuf,
    pids: Vec<i32>,
    cgroup: Option<cgroups::CgroupRecord>,
    layered: bool,
    layers: Option<layers::RootRecord>,
    /// poststop hooks, their state and cwd (the bundle), once create reached the hooks.
    poststop: Option<(Vec<oci_spec::runtime::Hook>, Vec<u8>, PathBuf)>,
    done: bool,
}

impl Drop for CreateGuard<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        for &pid in self.pids.iter().rev() {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
        }
        if let Some(cg) = &self.cgroup
            && let Err(e) = cgroups::open_driver(cg).and_then(|d| d.destroy())
        {
            logging::warn(&format!("cleanup after failed create: {e:#}"));
        }
        if self.layered
            && let Err(e) = layers::release_root(&self.rt.layers(), &self.dir, self.layers.as_ref())
        {
            logging::warn(&format!("cleanup after failed create: {e:#}"));
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            logging::warn(&format!(
                "cleanup after failed create: remove {}: {e}",
                self.dir.display()
            ));
        }
        if let Some((h, json, cwd)) = &self.poststop {
            for e in hooks::run_each("poststop", Some(h), json, Some(cwd)) {
                logging::warn(&format!("{e:#}"));
            }
        }
    }
}

fn has_user_join(plan: &crate::namespaces::Plan) -> bool {
    plan.join
        .iter()
        .any(|(t, _)| *t == oci_spec::runtime::LinuxNamespaceType::User)
}
