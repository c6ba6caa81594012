//! The container lifecycle as the OCI runtime spec defines it: create, start, kill, delete.
//!
//! `create` reads top to bottom: every resource it takes is recorded in state.json before it is
//! taken, and `CreateGuard` releases all of them if any later step fails. `delete` releases
//! the same list, so a crash at any point is recovered by `delete --force`.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use nix::fcntl::{OFlag, open};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::bundle::Bundle;
use crate::cgroups;
use crate::hooks;
use crate::init::{self, InitArgs};
use crate::layers::{self, LayerContext};
use crate::logging;
use crate::namespaces::{self, Plan};
use crate::notify;
use crate::rootfs;
use crate::state::{
    self, ContainerState, FIFO_FILE, StateRoot, Status, process_alive, process_start_time,
};
use crate::sync::{self, Channel, Message};
use crate::terminal;
use crate::utils::{self, validate_id, write_atomic};

/// Where a runtime keeps its state and layers (`--root`, `--store`).
pub struct Runtime {
    pub root: PathBuf,
    pub store: PathBuf,
}

impl Runtime {
    pub fn states(&self) -> StateRoot {
        StateRoot::new(&self.root)
    }
    pub fn layers(&self) -> LayerContext {
        LayerContext {
            store: self.store.clone(),
            state_root: self.root.clone(),
            recorded: state::recorded_root,
        }
    }
}

pub struct CreateOptions<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub pid_file: Option<&'a Path>,
    pub console_socket: Option<&'a Path>,
    pub no_pivot: bool,
    pub preserve_fds: i32,
    /// `run` in the foreground: the caller starts the container through the channel.
    pub foreground: bool,
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
    // 1. Everything that can be checked without side effects.
    let bundle = Bundle::load(opts.bundle)?;
    let spec = &bundle.spec;
    let process = spec
        .process()
        .as_ref()
        .context("config.json: process is required")?;
    let terminal = process.terminal() == Some(true);
    terminal::check_terminal_options(terminal, opts.console_socket, opts.foreground)?;
    let linux = spec.linux().as_ref();
    let has_ns = |t| {
        linux
            .and_then(|l| l.namespaces().as_ref())
            .is_some_and(|v| v.iter().any(|n| n.typ() == t))
    };
    if !has_ns(LinuxNamespaceType::Mount) {
        bail!("linux.namespaces: lrun needs a mount namespace (the rootfs is set up inside it)");
    }
    if (spec.hostname().is_some() || spec.domainname().is_some())
        && !has_ns(LinuxNamespaceType::Uts)
    {
        bail!("hostname: setting a hostname needs a uts namespace in linux.namespaces");
    }
    let plan = Plan::new(linux)?;
    // Compiled once here (cached across containers): the filter is checked before anything
    // exists, and the init only loads it.
    let seccomp = linux
        .and_then(|l| l.seccomp().as_ref())
        .map(|s| crate::seccomp::prepare_cached(s, &rt.root.join(".seccomp-cache")))
        .transpose()?;
    let cgroup = cgroups::Manager::new(linux.and_then(|l| l.cgroups_path().as_deref()), opts.id)?;

    // 2. Claim the id: from here on, every failure goes through the guard.
    // Recorded as layered before the layers are taken: a create killed while they are mounted
    // leaves state that tells `delete --force` to release them.
    let layered = layers::layer_spec(spec)?.is_some();
    let states = rt.states();
    let dir = states.claim(opts.id)?;
    let lock = state::lock(&dir)?;
    let mut guard = CreateGuard {
        rt,
        dir: dir.clone(),
        pids: Vec::new(),
        cgroup: None,
        layered,
        layers: None,
        done: false,
    };
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
        cgroups: cgroup.clone(),
        layered,
        layers: None,
        hooks: spec.hooks().clone(),
        notify_socket: notify::host_socket(),
    };
    state::save(&dir, &st)?;
    // Only root may read it: process.env often carries secrets.
    write_atomic(&dir.join(state::CONFIG_FILE), &bundle.raw, 0o600)
        .context("save config.json with the state")?;

    // 3. Root filesystem: layers (if any) mounted in the host namespace.
    let mut record = |r: &layers::RootRecord| {
        st.layers = Some(r.clone());
        state::save(&dir, &st)
    };
    match layers::prepare_root(&rt.layers(), &bundle.dir, spec, &dir, &mut record)? {
        Some(merged) => {
            guard.layers = st.layers.clone();
            st.rootfs = merged;
            state::save(&dir, &st)?;
        }
        None => rootfs::check_exists(&st.rootfs)?,
    }

    // 4. cgroups, before any container process exists.
    guard.cgroup = Some(cgroup.clone());
    cgroup.create()?;
    // Always applied: even without resources the device list has defaults to enforce.
    let no_resources = oci_spec::runtime::LinuxResources::default();
    let resources = linux
        .and_then(|l| l.resources().as_ref())
        .unwrap_or(&no_resources);
    // Only the default devices are allowed implicitly: linux.devices follow resources.devices.
    cgroup.set_with_devices(resources, &[])?;

    // 5. The exec fifo that holds the init until `start`, inherited by the init as an fd.
    let exec_fifo = match opts.foreground {
        true => None,
        false => Some(make_fifo(&dir.join(FIFO_FILE))?),
    };

    // 6. The container process.
    let listen_fds = socket_activation_fds();
    let notify_dir = dir.join("notify");
    let mut relay = None;
    if let Some(host) = &st.notify_socket {
        fs::create_dir(&notify_dir).with_context(|| format!("mkdir {}", notify_dir.display()))?;
        if opts.foreground {
            relay = Some(notify::Relay::bind(&notify_dir, host.clone())?);
        }
    }
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
    };
    // SAFETY: lrun is single-threaded; the child only runs init code and then execs or exits.
    let first = unsafe { utils::clone_fork(plan.clone_flags) }?;
    if first == 0 {
        drop(chan);
        init::child_main(&args, child_chan);
    }
    drop(child_chan);
    // Only the init may hold the fifo open: `start` waits for the last writer to go.
    drop(exec_fifo);
    guard.pids.push(first);

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
    cgroup.add_pid(first)?;
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

    if needs_runtime_hooks(spec) {
        chan.expect(Message::RunRuntimeHooks)?;
        if let Some(h) = spec.hooks() {
            let json = hook_state(opts.id, "creating", pid, &bundle.dir, spec);
            hooks::run_all("prestart", h.prestart().as_ref(), &json)?;
            hooks::run_all("createRuntime", h.create_runtime().as_ref(), &json)?;
        }
        chan.send(&Message::RuntimeHooksDone(pid))?;
    }
    let pty = match terminal {
        true => terminal::receive_pty(&chan, opts.console_socket)?,
        false => None,
    };
    chan.expect(Message::Ready)?;

    // 7. Done: record it, and only then let go of the guard.
    st.pid_start_time =
        process_start_time(pid).context("the container process exited during create")?;
    st.created_ok = true;
    state::save(&dir, &st)?;
    // Until this arrives the init dies with us: see init::init_steps.
    chan.send(&Message::Created)?;
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

/// Whether the init must stop before pivot_root for hooks that need its pid.
pub fn needs_runtime_hooks(spec: &Spec) -> bool {
    spec.hooks().as_ref().is_some_and(|h| {
        [
            h.prestart(),
            h.create_runtime(),
            h.create_container(),
            h.start_container(),
        ]
        .iter()
        .any(|v| v.as_ref().is_some_and(|v| !v.is_empty()))
    })
}

/// The state JSON given to hooks on stdin.
pub fn hook_state(id: &str, status: &str, pid: i32, bundle: &Path, spec: &Spec) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ociVersion": spec.version(),
        "id": id,
        "status": status,
        "pid": pid,
        "bundle": bundle,
        "annotations": spec.annotations().clone().unwrap_or_default(),
    }))
    .unwrap_or_default()
}

/// Make the exec fifo and open it for the init. O_RDWR never blocks on a fifo, and the init
/// needs no path lookup (nor /proc) inside the container: only root ever opens it by path.
fn make_fifo(path: &Path) -> Result<OwnedFd> {
    nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o600))
        .with_context(|| format!("mkfifo {}", path.display()))?;
    open(path, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .with_context(|| format!("open {}", path.display()))
}

pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let path =
        std::path::absolute(path).with_context(|| format!("--pid-file {}", path.display()))?;
    write_atomic(&path, pid.to_string().as_bytes(), 0o644)
        .with_context(|| format!("--pid-file {}", path.display()))
}

/// Releases what a failed `create` took, in reverse order.
struct CreateGuard<'a> {
    rt: &'a Runtime,
    dir: PathBuf,
    pids: Vec<i32>,
    cgroup: Option<cgroups::Manager>,
    layered: bool,
    layers: Option<layers::RootRecord>,
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
            && let Err(e) = cg.destroy()
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
    }
}

/// `start`: release the init from the exec fifo, then run poststart hooks.
pub fn start(rt: &Runtime, id: &str) -> Result<()> {
    let (dir, st) = rt.states().load(id)?;
    let _lock = state::lock(&dir)?;
    match st.status(&dir) {
        Status::Created => {}
        s => bail!("cannot start container {id:?}: it is {s}, not created"),
    }
    // Bound before the process starts, so not a word it says is lost.
    let relay = match &st.notify_socket {
        Some(host) => Some(notify::Relay::bind(&dir.join("notify"), host.clone())?),
        None => None,
    };
    let fifo_path = dir.join(FIFO_FILE);
    // The init holds the fifo open and has filled it; reading lets its last write through.
    let fifo = open(
        &fifo_path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("open {}", fifo_path.display()))?;
    wait_readable(&fifo, st.pid, st.pid_start_time)?;
    let mut byte = [0u8; 1];
    let _ = nix::unistd::read(&fifo, &mut byte);
    utils::remove_file_if_exists(&fifo_path)?;
    wait_for_exec(&fifo)?;
    run_poststart(&st);
    if let Some(relay) = relay {
        relay_until_ready(&relay, st.pid, st.pid_start_time)?;
    }
    Ok(())
}

/// As runc: `start` of a notify service returns once it said READY=1 (or exited), having
/// relayed everything up to that with MAINPID set to the container's init.
fn relay_until_ready(relay: &notify::Relay, pid: i32, start_time: u64) -> Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    loop {
        let mut fds = [PollFd::new(relay.fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(n) if n > 0 => {
                if relay.forward_one(Some(pid))? {
                    return Ok(());
                }
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {
                if !process_alive(pid, start_time) {
                    return Ok(());
                }
            }
            Err(e) => return Err(e).context("poll the notify socket"),
        }
    }
}

pub fn run_poststart(st: &ContainerState) {
    if let Some(h) = &st.hooks {
        let json = serde_json::to_vec(&st.oci(Status::Running)).unwrap_or_default();
        // The spec: a failing poststart hook is logged; the container keeps running.
        if let Err(e) = hooks::run_all("poststart", h.poststart().as_ref(), &json) {
            logging::warn(&format!("{e:#}"));
        }
    }
}

/// The init keeps the fifo open (close-on-exec) until it execs: draining what it wrote lets
/// its blocked write through, and EOF means the program runs.
fn wait_for_exec(fifo: &OwnedFd) -> Result<()> {
    let flags =
        nix::fcntl::fcntl(fifo, nix::fcntl::FcntlArg::F_GETFL).context("fcntl exec fifo")?;
    let blocking = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fifo, nix::fcntl::FcntlArg::F_SETFL(blocking)).context("fcntl exec fifo")?;
    let mut buf = [0u8; 4096];
    loop {
        match nix::unistd::read(fifo, &mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("read exec fifo"),
        }
    }
}

fn wait_readable(fifo: &OwnedFd, pid: i32, start_time: u64) -> Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    loop {
        let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(n) if n > 0 => return Ok(()),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context("poll exec fifo"),
        }
        if !process_alive(pid, start_time) {
            bail!("the container process exited before start");
        }
    }
}

/// Parse a signal as runc does: a number, or a name with or without SIG.
pub fn parse_signal(s: &str) -> Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).with_context(|| format!("unknown signal {s:?}"));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<Signal>()
        .map_err(|_| anyhow::anyhow!("unknown signal {s:?}"))
}

pub fn kill(rt: &Runtime, id: &str, sig: Signal, all: bool) -> Result<()> {
    let (dir, st) = rt.states().load(id)?;
    let status = st.status(&dir);
    if !matches!(status, Status::Created | Status::Running | Status::Paused) {
        bail!("cannot kill container {id:?}: it is {status}");
    }
    // The init first, checked against pid reuse; with --all, then everything else in the
    // container's cgroups (which may exit meanwhile, and whose loss is no error).
    signal_process(st.pid, st.pid_start_time, sig)?;
    if all {
        for pid in st.cgroups.pids()?.into_iter().filter(|p| *p != st.pid) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
        }
    }
    Ok(())
}

/// Signal a process through a pidfd, after checking it is still the one we started: a pid
/// reused by an unrelated process must never be signalled.
fn signal_process(pid: i32, start_time: u64, sig: Signal) -> Result<()> {
    // SAFETY: pidfd_open with a pid and no flags.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        bail!("the container process {pid} is gone");
    }
    // SAFETY: the kernel gave us this fd.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    if !process_alive(pid, start_time) {
        bail!("the container process {pid} is gone");
    }
    // SAFETY: pidfd_send_signal on our pidfd.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig as i32,
            0usize,
            0,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("send {sig} to {pid}"));
    }
    Ok(())
}

/// `delete`: stop what is left, release cgroups and layers, run poststop hooks, remove state.
pub fn delete(rt: &Runtime, id: &str, force: bool) -> Result<()> {
    let states = rt.states();
    let dir = states.container_dir(id)?;
    if !dir.is_dir() {
        bail!("container {id:?} does not exist");
    }
    let lock = state::lock(&dir)?;
    let st = match states.load(id) {
        Ok((_, st)) => Some(st),
        // No state.json: create died before recording anything else.
        Err(_) if !dir.join(state::STATE_FILE).exists() => None,
        Err(e) if force => {
            logging::warn(&format!("{e:#}"));
            None
        }
        Err(e) => return Err(e),
    };
    if let Some(st) = &st {
        let status = st.status(&dir);
        let stoppable = matches!(status, Status::Stopped | Status::Created);
        if !force && !stoppable {
            bail!("cannot delete container {id:?}: it is {status} (stop it first or use --force)");
        }
        if status != Status::Stopped {
            let _ = signal_process(st.pid, st.pid_start_time, Signal::SIGKILL);
        }
        st.cgroups.destroy()?;
        wait_gone(st.pid, st.pid_start_time);
        if st.layered {
            layers::release_root(&rt.layers(), &dir, st.layers.as_ref())?;
        }
    } else {
        // Whatever a crashed create may have taken in the layers; release is idempotent.
        layers::release_root(&rt.layers(), &dir, None)?;
    }
    fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    drop(lock);
    if let Some(st) = &st
        && let Some(h) = &st.hooks
    {
        let json = serde_json::to_vec(&st.oci(Status::Stopped)).unwrap_or_default();
        // The spec: poststop failures are logged and delete goes on.
        if let Err(e) = hooks::run_all("poststop", h.poststop().as_ref(), &json) {
            logging::warn(&format!("{e:#}"));
        }
    }
    Ok(())
}

fn wait_gone(pid: i32, start_time: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut nap = Duration::from_micros(100);
    while process_alive(pid, start_time) && Instant::now() < deadline {
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(10));
    }
}

/// What `gc` did: the ids it removed, and each container it could not judge or delete, with
/// why (one failing container must not keep gc from the others).
#[derive(Default)]
pub struct GcOutcome {
    pub removed: Vec<String>,
    pub failed: Vec<(String, anyhow::Error)>,
}

/// `gc`: recover after crashes. A container whose `create` died half-way (never marked
/// created, and no process holds its lock) is deleted; with `stopped`, stopped containers
/// too.
pub fn gc(rt: &Runtime, stopped: bool) -> Result<GcOutcome> {
    let states = rt.states();
    let mut outcome = GcOutcome::default();
    for id in states.list()? {
        match gc_one(rt, &id, stopped) {
            Ok(true) => outcome.removed.push(id),
            Ok(false) => {}
            Err(e) => outcome.failed.push((id, e)),
        }
    }
    // Shared layer mounts whose last user died without releasing them.
    layers::gc_mounts(&rt.layers())?;
    Ok(outcome)
}

/// Delete one container if it is stale; returns whether it was.
fn gc_one(rt: &Runtime, id: &str, stopped: bool) -> Result<bool> {
    let states = rt.states();
    let dir = states.container_dir(id)?;
    let Some(lock) = state::try_lock(&dir)? else {
        return Ok(false);
    };
    let stale = match states.load(id) {
        Ok((_, st)) => !st.created_ok || (stopped && st.status(&dir) == Status::Stopped),
        // No state.json and nobody creating: the creator died before writing it.
        Err(_) => !dir.join(state::STATE_FILE).exists(),
    };
    drop(lock);
    if stale {
        delete(rt, id, true)?;
    }
    Ok(stale)
}
