//! `exec`: a new process inside a running container. It joins every namespace of the
//! container's init (found through /proc/PID/ns) and its cgroups, and gets the container's
//! capabilities, rlimits, no_new_privs and seccomp unless told otherwise.
//!
//! lrun forks a child that joins the cgroups (while it still sees the host's /sys/fs/cgroup)
//! and the namespaces, then forks the process itself with CLONE_PARENT: entering a pid
//! namespace only applies to children, and lrun must be the parent to wait for it.

use std::convert::Infallible;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};

use super::foreground;
use super::{Runtime, write_pid_file};
use crate::cgroups;
use crate::namespaces;
use crate::process;
use crate::state::{CONFIG_FILE, Status};
use crate::sync::{self, Channel, Message};
use crate::utils::{Forked, SingleThreaded, clone_fork};

pub struct ExecOptions<'a> {
    pub id: &'a str,
    pub process: Process,
    pub detach: bool,
    pub pid_file: Option<&'a Path>,
    pub console_socket: Option<&'a Path>,
    pub preserve_fds: i32,
    /// Sub-cgroups of the container's to run in (`--cgroup`); empty: its own.
    pub sub_cgroups: cgroups::SubCgroups,
    /// Exec into a paused container (the process waits, frozen, until it is resumed).
    pub ignore_paused: bool,
}

/// The container's config as saved by create (exec builds its process from it).
pub fn container_spec(rt: &Runtime, id: &str) -> Result<Spec> {
    let (dir, _) = rt.states().load(id)?;
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
    crate::bundle::parse_config(&text).with_context(|| format!("{}", path.display()))
}

pub fn exec(rt: &Runtime, opts: ExecOptions) -> Result<i32> {
    let (dir, st) = rt.states().load(opts.id)?;
    // runc's words.
    let status = st.status(&dir, cgroups::is_frozen);
    match status {
        Status::Running | Status::Created => {}
        Status::Paused if opts.ignore_paused => {}
        Status::Paused => {
            bail!("cannot exec in a paused container (use --ignore-paused to override)")
        }
        Status::Stopped => bail!("cannot exec in a stopped container"),
        s => bail!("cannot exec in container {:?}: it is {s}", opts.id),
    }
    let spec = container_spec(rt, opts.id)?;
    crate::lsm::check(&opts.process, None)?;
    let terminal = opts.process.terminal() == Some(true);
    crate::bundle::check_terminal_options(terminal, opts.console_socket, !opts.detach)?;
    let joins = namespaces_of(st.pid)?;
    // setns into a mount namespace puts the caller at the namespace's root mount, which is
    // not the container's root when the host itself runs chrooted: enter the init's root.
    let root = File::open(format!("/proc/{}/root", st.pid))
        .with_context(|| format!("open /proc/{}/root", st.pid))?;
    let filter = spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .map(|s| crate::seccomp::prepare_cached(s, &rt.root.join(".seccomp-cache")))
        .transpose()?;
    // SCMP_ACT_NOTIFY: the process's own listener goes to the container's agent, as the init's
    // does (runtime-spec/seccomp.md), with the container's state.
    let agent = filter.as_ref().filter(|f| f.has_listener()).and_then(|_| {
        let s = spec.linux().as_ref()?.seccomp().as_ref()?;
        Some(AgentConf {
            path: s.listener_path().clone()?,
            metadata: s.listener_metadata().clone(),
            state: crate::hooks::hook_state(
                opts.id,
                &status.to_string(),
                st.pid,
                &st.bundle,
                &spec,
            ),
        })
    });

    let mut cgroup = cgroups::open_driver(&st.cgroups)?;
    if !opts.sub_cgroups.is_empty() {
        cgroup = cgroups::open_driver(&cgroup.sub_cgroup(&opts.sub_cgroups)?)?;
    }
    let mask = if opts.detach {
        None
    } else {
        Some(foreground::block_signals()?)
    };
    let (chan, child_chan) = sync::pair()?;
    // The child joins namespaces, forks and exits.
    let one_thread = SingleThreaded::check()?;
    let first = match clone_fork(&one_thread, CloneFlags::empty())? {
        Forked::Parent(pid) => pid,
        Forked::Child(one_thread) => {
            drop(chan);
            let target = Target {
                cgroups: &*cgroup,
                joins: &joins,
                root: &root,
                filter: filter.as_ref(),
                agent: agent.as_ref(),
                process: &opts.process,
                preserve_fds: opts.preserve_fds,
            };
            let Err(e) = joiner(&one_thread, &target, &child_chan);
            let _ = child_chan.send(&Message::Error(format!("{e:#}")));
            // SAFETY: leave the forked child without running the parent's destructors.
            unsafe { libc::_exit(1) }
        }
    };
    drop(child_chan);
    let pid = match chan.recv() {
        Ok(Message::InitPid(p)) => p,
        Ok(Message::Error(e)) => {
            let _ = waitpid(Pid::from_raw(first), None);
            bail!("{e}")
        }
        Ok(m) => bail!("sync protocol: unexpected {m:?}"),
        Err(e) => return Err(e),
    };
    let _ = waitpid(Pid::from_raw(first), None);
    let result = finish_parent(&chan, terminal, &opts);
    if result.is_err() {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(pid), None);
    }
    let pty = result?;
    crate::logging::debug(&format!("exec {}: process {pid} ready", opts.id));
    if let Some(p) = opts.pid_file {
        write_pid_file(p, pid)?;
    }
    match mask {
        None => Ok(0),
        Some(mask) => foreground::supervise(Pid::from_raw(pid), &mask, pty, None),
    }
}

fn finish_parent(chan: &Channel, terminal: bool, opts: &ExecOptions) -> Result<Option<OwnedFd>> {
    let pty = match terminal {
        true => super::console::receive_pty(chan, opts.console_socket)?,
        false => None,
    };
    chan.expect(Message::Ready)?;
    Ok(pty)
}

/// The container init's namespaces that differ from ours, user namespace first.
fn namespaces_of(pid: i32) -> Result<Vec<(LinuxNamespaceType, OwnedFd)>> {
    use LinuxNamespaceType as T;
    let mut out = Vec::new();
    for (t, name) in [
        (T::User, "user"),
        (T::Ipc, "ipc"),
        (T::Uts, "uts"),
        (T::Network, "net"),
        (T::Pid, "pid"),
        (T::Cgroup, "cgroup"),
        (T::Time, "time"),
        (T::Mount, "mnt"),
    ] {
        let theirs = format!("/proc/{pid}/ns/{name}");
        let mine = format!("/proc/self/ns/{name}");
        let (Ok(a), Ok(b)) = (std::fs::metadata(&theirs), std::fs::metadata(&mine)) else {
            continue;
        };
        if a.ino() == b.ino() && a.dev() == b.dev() {
            continue;
        }
        let f = File::open(&theirs).with_context(|| format!("open {theirs}"))?;
        out.push((t, OwnedFd::from(f)));
    }
    Ok(out)
}

/// What the exec'd process joins and runs (the child has a copy of the parent's memory).
struct Target<'a> {
    cgroups: &'a dyn crate::cgroups::CgroupDriver,
    joins: &'a [(LinuxNamespaceType, OwnedFd)],
    root: &'a File,
    filter: Option<&'a crate::seccomp::Filter>,
    agent: Option<&'a AgentConf>,
    process: &'a Process,
    preserve_fds: i32,
}

/// Where the exec'd process's seccomp listener goes.
struct AgentConf {
    path: std::path::PathBuf,
    metadata: Option<String>,
    state: Vec<u8>,
}

/// The agent's connection, made while its path is the host's, and the host's /proc, through
/// which the process learns its pid as the agent sees it (in its own namespaces both are gone).
struct AgentLink {
    agent: crate::seccomp::Agent,
    host_proc: OwnedFd,
}

impl AgentLink {
    fn connect(c: &AgentConf) -> Result<Self> {
        let agent =
            crate::seccomp::Agent::connect(&c.path, 0, c.metadata.as_deref(), c.state.clone())?;
        let host_proc = nix::fcntl::open(
            "/proc",
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .context("open /proc")?;
        Ok(AgentLink { agent, host_proc })
    }

    /// In the forked process: the agent, told our host pid.
    fn into_agent(self) -> Result<crate::seccomp::Agent> {
        let mut agent = self.agent;
        let pid: i32 = nix::fcntl::readlinkat(&self.host_proc, "self")
            .ok()
            .and_then(|p| p.to_str().and_then(|s| s.parse().ok()))
            .context("read our host pid from /proc/self")?;
        agent.set_pid(pid);
        Ok(agent)
    }
}

/// The first child: join cgroups, then namespaces, then fork the process itself.
fn joiner(one_thread: &SingleThreaded, t: &Target, chan: &Channel) -> Result<Infallible> {
    let Target {
        cgroups,
        joins,
        root,
        filter,
        agent,
        process,
        preserve_fds,
    } = *t;
    sync::die_with_parent(chan);
    let agent = agent.map(AgentLink::connect).transpose()?;
    let me = std::process::id() as i32;
    cgroups
        .add_pid(me)
        .with_context(|| format!("error adding pid {me} to cgroups"))?;
    for (t, fd) in joins {
        setns(fd.as_fd(), namespaces::flag(*t))
            .with_context(|| format!("setns into the container's {t} namespace"))?;
    }
    nix::unistd::fchdir(root.as_fd()).context("chdir to the container's root")?;
    nix::unistd::chroot(".").context("chroot to the container's root")?;
    sync::fork_reported(one_thread, chan)?;
    // The exec'd process must not outlive a dying `lrun exec` half-way.
    sync::die_with_parent(chan);
    let agent = agent.map(AgentLink::into_agent).transpose()?;
    match exec_process(filter, agent, process, chan, preserve_fds) {
        Ok(never) => match never {},
        Err(e) => Err(e),
    }
}

fn exec_process(
    filter: Option<&crate::seccomp::Filter>,
    agent: Option<crate::seccomp::Agent>,
    process: &Process,
    chan: &Channel,
    preserve_fds: i32,
) -> Result<Infallible> {
    process::set_rlimits(process.rlimits().as_deref().unwrap_or_default())?;
    process::set_scheduling(process, None)?;
    process::enter_cwd(process.cwd(), false)?;
    let args = process.args().as_deref().unwrap_or_default();
    if args.is_empty() {
        bail!("exec: no command given");
    }
    let env = process.env().as_deref().unwrap_or_default();
    let exe =
        process::find_executable(&args[0], env).context("unable to start container process")?;
    let exe_c = process::path_cstring(&exe)?;
    let argv = process::cstrings(args)?;
    let envp = process::cstrings(env)?;
    if process.terminal() == Some(true) {
        super::console::setup_terminal(chan, process.user().uid())?;
    }
    // Before the user switch and no_new_privs (as the init), so a refused profile fails exec.
    crate::lsm::set_exec_labels(process)?;
    // What can fail for want of privilege fails `lrun exec` itself (exit 255 with the error).
    let mut late = process::secure(process, filter, agent, preserve_fds)?;
    // From here the process belongs to the container.
    let _ = nix::sys::prctl::set_pdeathsig(None);
    chan.send(&Message::Ready)?;
    let Err(e) = late
        .load_filter()
        .and_then(|()| process::exec(&exe_c, &argv, &envp));
    // `lrun exec` no longer listens on the channel: report on the process's stderr.
    eprintln!("lrun: exec: {e:#}");
    // As runc's: a process that fails after its exec was reported started exits 255.
    // SAFETY: leave without running destructors.
    unsafe { libc::_exit(255) }
}
