//! The container side of `create`: runs in the process(es) cloned by `create`,
//! enters the namespaces, builds the root filesystem, waits for `start`, and execs.
//!
//! Order (each step says why it sits where it does):
//! 1. join/unshare early namespaces, let the parent write id maps and join cgroups;
//! 2. unshare the rest (cgroup namespace now roots at the container's cgroup), fork the real
//!    init if a pid or time namespace needs it;
//! 3. mounts and devices (host paths still visible), runtime hooks in the parent,
//!    createContainer hooks here, then pivot_root, sysctl, masked/readonly paths;
//! 4. hostname, rlimits, cwd, (LSM labels), seccomp without no_new_privs, user, capabilities,
//!    no_new_privs, find the executable: any failure is still a failed `create` with nothing
//!    left behind;
//! 5. tell the parent "ready", wait for `start` (exec fifo, or the socket for `run`);
//! 6. a seccomp filter under no_new_privs, startContainer hooks, exec; a failure here is
//!    reported to `start` (or `run`), which fails, and the init exits 255.

use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::path::Path;

use anyhow::{Context, Result};
use nix::fcntl::OFlag;
use nix::unistd::{Gid, Uid, setresgid, setresuid};
use oci_spec::runtime::Spec;

use crate::hooks;
use crate::namespaces::Plan;
use crate::process;
use crate::rootfs;
use crate::sync::{Channel, Message};
use crate::utils::SingleThreaded;

/// What the parent hands to the child (the child has a copy of the parent's memory).
pub struct InitArgs<'a> {
    pub id: &'a str,
    pub spec: &'a Spec,
    pub bundle: &'a Path,
    pub rootfs: &'a Path,
    pub plan: &'a Plan,
    /// The exec fifo, opened by the parent (O_RDWR, close-on-exec): the init never looks up a
    /// path in the host's state directory nor holds a directory fd of it. None for `run`.
    pub exec_fifo: Option<&'a OwnedFd>,
    /// The parent's lock on the state directory: the child must not hold it.
    pub lock_fd: RawFd,
    /// `run` in the foreground: wait for Start on the channel instead of the fifo.
    pub foreground: bool,
    pub no_pivot: bool,
    pub preserve_fds: i32,
    /// Socket activation: this many fds from 3 are systemd's listening sockets.
    pub listen_fds: i32,
    /// Host directory holding lrun's notify socket, bind-mounted into the container.
    pub notify_dir: Option<&'a Path>,
    /// linux.seccomp, compiled by the parent.
    pub seccomp: Option<&'a crate::seccomp::Filter>,
    /// Bind sources the parent opened (`rootfs::mounts::open_bind_sources`), by mount index.
    pub bind_sources: &'a [Option<OwnedFd>],
    /// A layered root built detached by the parent (`layers::LayeredRoot`), to attach at
    /// `rootfs` inside the container's mount namespace.
    pub root_mount: Option<&'a OwnedFd>,
}

/// Entry point of the first child. Never returns.
pub fn child_main(a: &InitArgs, one_thread: &SingleThreaded, chan: Channel) -> ! {
    // SAFETY: closing our inherited copy of the parent's lock fd.
    unsafe { libc::close(a.lock_fd) };
    match child_steps(a, one_thread, &chan) {
        Ok(never) => match never {},
        Err(e) => {
            let msg = format!("{e:#}");
            if chan.send(&Message::Error(msg.clone())).is_err() {
                eprintln!("lrun: container init: {msg}");
            }
            // SAFETY: leave without running the parent's atexit handlers or destructors.
            unsafe { libc::_exit(1) }
        }
    }
}

fn child_steps(a: &InitArgs, one_thread: &SingleThreaded, chan: &Channel) -> Result<Infallible> {
    crate::sync::die_with_parent(chan);
    // Whether the parent has written id maps and joined us to the cgroups yet. In the direct
    // case the child only waits for that where it matters (see `ParentSetup`).
    let mut parent = ParentSetup {
        done: false,
        direct: a.plan.direct,
    };
    if !a.plan.direct {
        a.plan.enter_early()?;
        chan.send(&Message::NeedParentSetup)?;
        parent.wait(a, chan)?;
    } else if a.plan.new_user {
        // Nothing can be done as root of the new namespace before the maps exist.
        parent.wait(a, chan)?;
    }
    if a.plan.new_user {
        // Become the namespace's root so files we create have a mapped owner.
        setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
            .context("setgid 0 in the user namespace")?;
        setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
            .context("setuid 0 in the user namespace")?;
    }
    if !a.plan.direct {
        a.plan.enter_late()?;
        if a.plan.fork_init {
            crate::sync::fork_reported(one_thread, chan)?;
            crate::sync::die_with_parent(chan);
        }
    }
    init_steps(a, chan, &mut parent)
}

/// The parent's part of set-up (id maps, cgroups). In the direct case the child mounts what it
/// can meanwhile (moving a process between cgroup v1 hierarchies waits for RCU grace periods)
/// and waits only before the cgroup namespace and cgroup mounts, which need the final cgroup.
struct ParentSetup {
    done: bool,
    direct: bool,
}

impl ParentSetup {
    fn wait(&mut self, a: &InitArgs, chan: &Channel) -> Result<()> {
        if self.done {
            return Ok(());
        }
        chan.expect(Message::ParentSetupDone)?;
        self.done = true;
        if self.direct {
            // Only the cgroup namespace is left to create (see namespaces::Plan).
            a.plan.enter_late()?;
        }
        Ok(())
    }
}

fn init_steps(a: &InitArgs, chan: &Channel, parent: &mut ParentSetup) -> Result<Infallible> {
    let spec = a.spec;
    let process = spec
        .process()
        .as_ref()
        .context("config.json: process is missing")?;
    let hooks = spec.hooks().as_ref();
    let linux = spec.linux().as_ref();

    let own_mounts = a.plan.mount_ns;
    if own_mounts {
        rootfs::prepare(
            spec,
            a.bundle,
            &rootfs::Root {
                path: a.rootfs,
                detached: a.root_mount.map(|m| m.as_fd()),
            },
            a.plan.new_user,
            a.notify_dir
                .map(|host| rootfs::HostDir {
                    host,
                    container: Path::new(crate::notify::CONTAINER_DIR),
                    what: "notify socket",
                })
                .as_ref(),
            a.bind_sources,
            &mut || parent.wait(a, chan),
        )?;
    }
    parent.wait(a, chan)?;

    let mut host_pid = 0;
    if hooks::needs_runtime_hooks(spec) {
        chan.send(&Message::RunRuntimeHooks)?;
        match chan.recv()? {
            Message::RuntimeHooksDone(p) => host_pid = p,
            Message::Error(e) => anyhow::bail!("{e}"),
            m => anyhow::bail!("sync protocol: unexpected {m:?}"),
        }
    }
    // createContainer and startContainer hooks both see "created": the runtime environment
    // exists and the program has not run yet (runtime-spec/design.md, "Hooks' state").
    let state_json = hooks::hook_state(a.id, "created", host_pid, a.bundle, spec);
    if let Some(h) = hooks {
        hooks::run_all(
            "createContainer",
            h.create_container().as_ref(),
            &state_json,
            // runc's prepareRootfs chdirs into the container's root (before pivot_root) first.
            Some(a.rootfs),
        )?;
    }

    let agent = connect_seccomp_agent(a)?;
    let terminal = process.terminal() == Some(true);
    if own_mounts {
        rootfs::enter(a.rootfs, a.no_pivot)?;
        // Before readonlyPaths, which usually include /proc/sys.
        crate::sysctl::apply(linux.and_then(|l| l.sysctl().as_ref()))?;
        rootfs::finalize(spec)?;
    } else {
        // The caller's mount namespace: its devpts, reached before the chroot (the rootfs
        // gets no /dev of lrun's), and a chroot, since pivot_root would move the caller's /.
        if terminal {
            super::console::setup_terminal(chan, process.user().uid())?;
        }
        rootfs::chroot_into(a.rootfs)?;
        crate::sysctl::apply(linux.and_then(|l| l.sysctl().as_ref()))?;
    }
    if terminal && own_mounts {
        super::console::setup_terminal(chan, process.user().uid())?;
    }

    if let Some(name) = spec.hostname().as_deref() {
        nix::unistd::sethostname(name).with_context(|| format!("hostname {name:?}"))?;
    }
    if let Some(name) = spec.domainname().as_deref() {
        set_domainname(name)?;
    }
    process::set_rlimits(process.rlimits().as_deref().unwrap_or_default())?;
    process::set_scheduling(process, linux.and_then(|l| l.personality().as_ref()))?;
    // As root: a missing directory is created (as runc does for the init).
    process::enter_cwd(process.cwd(), true)?;
    let args = process.args().as_deref().unwrap_or_default();
    let mut env = process.env().clone().unwrap_or_default();
    if a.listen_fds > 0 {
        // The sockets' owner is now the container's process, with its pid as seen inside.
        // Their names (FileDescriptorName=, for sd_listen_fds_with_names) go along.
        env.retain(|e| {
            !e.starts_with("LISTEN_FDS=")
                && !e.starts_with("LISTEN_PID=")
                && !e.starts_with("LISTEN_FDNAMES=")
        });
        env.push(format!("LISTEN_FDS={}", a.listen_fds));
        env.push(format!("LISTEN_PID={}", std::process::id()));
        if let Some(names) = std::env::var_os("LISTEN_FDNAMES") {
            env.push(format!("LISTEN_FDNAMES={}", names.to_string_lossy()));
        }
    }
    if a.notify_dir.is_some() {
        env.retain(|e| !e.starts_with("NOTIFY_SOCKET="));
        env.push(crate::notify::container_env());
    }
    // The LSM labels (AppArmor exec profile, SELinux exec label): after every mount and path
    // lookup of the set-up, before the user switch and no_new_privs below (as runc's init:
    // no_new_privs would restrict the transition), and before `ready` so that a profile the
    // kernel refuses fails `create`.
    crate::lsm::set_exec_labels(process)?;

    // Every step that can fail for want of privilege (groups, ids, capabilities,
    // no_new_privs, a seccomp filter without no_new_privs) runs before `ready`: a failure is
    // a failed `create`, with nothing left behind. What is left for after `start` is only
    // what needs no privilege.
    let mut late = process::secure(process, a.seccomp, agent, a.preserve_fds)?;
    // As the process's user, as runc's LookPath after finalizeNamespace; here so that a
    // missing program fails `create` (engines map its words to 127/126 only for create and
    // exec errors, not for start's).
    let exe =
        process::find_executable(&args[0], &env).context("unable to start container process")?;
    let exe_c = process::path_cstring(&exe)?;
    let argv = process::cstrings(args)?;
    let envp = process::cstrings(&env)?;
    // runc gives a startContainer hook without an env of its own the process's (de facto, and
    // kept by its tests: "startContainer hook should inherit process environment").
    let start_hooks: Vec<oci_spec::runtime::Hook> = hooks
        .and_then(|h| h.start_container().clone())
        .unwrap_or_default()
        .into_iter()
        .map(|mut h| {
            if h.env().is_none() {
                h.set_env(Some(env.clone()));
            }
            h
        })
        .collect();

    // Set-up is done. The parent may exit once it has recorded us, so pdeathsig goes now
    // (the user switch above may have cleared it already); until the parent says the state is
    // saved (Created), its death shows as EOF on the channel and we die all the same: a
    // container that was never recorded never outlives its `create`.
    let _ = nix::sys::prctl::set_pdeathsig(None);
    chan.send(&Message::Ready)?;
    if chan.expect(Message::Created).is_err() {
        // SAFETY: the parent died or gave up on us: nobody to report to.
        unsafe { libc::_exit(1) }
    }
    // The exec fifo (or, for `run`, the channel) stays open close-on-exec until exec: its
    // closing tells `start` or `run` that the program now runs, so poststart hooks come
    // after it, as the spec asks.
    if wait_for_start(a, chan).is_err() {
        // `delete` killed us, or the parent of `run` died: nobody to report to.
        // SAFETY: as above.
        unsafe { libc::_exit(1) }
    }
    let Err(e) = finish(
        a,
        &mut late,
        &start_hooks,
        &state_json,
        &exe_c,
        &argv,
        &envp,
    );
    let msg = format!("{e:#}");
    // `start` (or `run`) reports it and fails; our stderr is the container's, the last resort.
    let told = match (a.foreground, a.exec_fifo) {
        (true, _) => chan.send(&Message::Error(msg.clone())).is_ok(),
        (false, Some(fifo)) => {
            let mut text = vec![crate::sync::FIFO_ERROR];
            text.extend_from_slice(msg.as_bytes());
            nix::unistd::write(fifo, &text).is_ok()
        }
        (false, None) => false,
    };
    if !told {
        eprintln!("lrun: container init: {msg}");
    }
    // runc's init exits 255 when it fails after `start` (e.g. execve: exec format error).
    // SAFETY: as above.
    unsafe { libc::_exit(255) }
}

/// The seccomp agent's socket is a host path: connect while it is still visible. The pid the
/// agent gets is ours as the host sees it (/proc here is still the host's).
fn connect_seccomp_agent(a: &InitArgs) -> Result<Option<crate::seccomp::Agent>> {
    let Some(s) = a.spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else {
        return Ok(None);
    };
    let (Some(filter), Some(path)) = (a.seccomp, s.listener_path()) else {
        return Ok(None);
    };
    if !filter.has_listener() {
        return Ok(None);
    }
    let pid: i32 = std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse().ok()))
        .context("read our host pid from /proc/self")?;
    let state = hooks::hook_state(a.id, "creating", pid, a.bundle, a.spec);
    crate::seccomp::Agent::connect(path, pid, s.listener_metadata().as_deref(), state).map(Some)
}

fn wait_for_start(a: &InitArgs, chan: &Channel) -> Result<()> {
    if a.foreground {
        return chan.expect(Message::Start);
    }
    let fifo = a.exec_fifo.context("no exec fifo to wait on")?;
    block_until_read(fifo)
}

/// Block until `lrun start` reads from the exec fifo: fill the pipe without blocking, then
/// write one more byte, which waits until `start` has drained a page (start reads until EOF,
/// which comes when we exec and the close-on-exec fd goes).
fn block_until_read(fifo: &OwnedFd) -> Result<()> {
    use nix::errno::Errno;
    use nix::fcntl::{FcntlArg, fcntl};
    // One page is all there is to fill (fails only for unprivileged users: then 16 pages).
    let _ = fcntl(fifo, FcntlArg::F_SETPIPE_SZ(4096));
    let flags =
        OFlag::from_bits_truncate(fcntl(fifo, FcntlArg::F_GETFL).context("fcntl exec fifo")?);
    fcntl(fifo, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).context("fcntl exec fifo")?;
    let page = [crate::sync::FIFO_FILL; 4096];
    // Whole pages, then single bytes into what is left of the last page: afterwards no write
    // can merge into a partly used page, so the next one needs `start` to free a whole page.
    for chunk in [&page[..], &page[..1]] {
        loop {
            match nix::unistd::write(fifo, chunk) {
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => break,
                Err(e) => return Err(e).context("write exec fifo"),
            }
        }
    }
    fcntl(fifo, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK)).context("fcntl exec fifo")?;
    loop {
        match nix::unistd::write(fifo, &[crate::sync::FIFO_FILL]) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e).context("write exec fifo"),
        }
    }
}

/// After `start`: the filter that had to wait, startContainer hooks (under the container's
/// filter, identity and capabilities, as runc and crun run them), execve.
fn finish(
    a: &InitArgs,
    late: &mut process::Late,
    start_hooks: &Vec<oci_spec::runtime::Hook>,
    state_json: &[u8],
    exe: &CString,
    argv: &[CString],
    envp: &[CString],
) -> Result<Infallible> {
    late.load_filter()?;
    // In process.cwd, entered above (as runc, whose init has chdired there by now).
    hooks::run_all("startContainer", Some(start_hooks), state_json, None)?;
    if let Some(fifo) = a.exec_fifo {
        // Tells `start` we got as far as execve (EOF without it: we died on the way). A
        // `start` killed since it released us reads nothing (EPIPE): the program runs anyway.
        match nix::unistd::write(fifo, &[crate::sync::FIFO_EXEC]) {
            Ok(_) | Err(nix::errno::Errno::EPIPE) => {}
            Err(e) => return Err(e).context("write exec fifo"),
        }
    }
    process::exec(exe, argv, envp)
}

fn set_domainname(name: &str) -> Result<()> {
    CString::new(name).context("domainname contains a NUL byte")?;
    rustix::system::setdomainname(name.as_bytes())
        .map_err(std::io::Error::from)
        .with_context(|| format!("domainname {name:?}"))
}
