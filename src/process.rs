//! The container process: rlimits, user and groups, capabilities, no_new_privs, and exec.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use caps::CapSet;
use nix::sys::resource::{Resource, setrlimit};
use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};
use oci_spec::runtime::{Capabilities, LinuxCapabilities, PosixRlimit, PosixRlimitType, Process};

/// Apply process.rlimits (before the user switch: raising a hard limit needs privilege).
pub fn set_rlimits(rlimits: &[PosixRlimit]) -> Result<()> {
    for r in rlimits {
        let res = rlimit_resource(r.typ());
        setrlimit(res, r.soft(), r.hard()).with_context(|| {
            format!(
                "process.rlimits: {:?} soft {} hard {}",
                r.typ(),
                r.soft(),
                r.hard()
            )
        })?;
    }
    Ok(())
}

fn rlimit_resource(t: PosixRlimitType) -> Resource {
    use PosixRlimitType as T;
    match t {
        T::RlimitCpu => Resource::RLIMIT_CPU,
        T::RlimitFsize => Resource::RLIMIT_FSIZE,
        T::RlimitData => Resource::RLIMIT_DATA,
        T::RlimitStack => Resource::RLIMIT_STACK,
        T::RlimitCore => Resource::RLIMIT_CORE,
        T::RlimitRss => Resource::RLIMIT_RSS,
        T::RlimitNproc => Resource::RLIMIT_NPROC,
        T::RlimitNofile => Resource::RLIMIT_NOFILE,
        T::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        T::RlimitAs => Resource::RLIMIT_AS,
        T::RlimitLocks => Resource::RLIMIT_LOCKS,
        T::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        T::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        T::RlimitNice => Resource::RLIMIT_NICE,
        T::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        T::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

/// Switch to process.user and set the capability sets, in the order the kernel requires:
/// bounding set while still privileged, keep capabilities across setuid, then the final sets.
fn set_identity(process: &Process) -> Result<()> {
    let caps = process.capabilities().as_ref();
    if let Some(c) = caps {
        let bounding = to_caps(c.bounding().as_ref());
        // Only the capabilities this kernel has, dropped without reading each first (dropping
        // one the set lacks already is a no-op). Without CAP_SETPCAP every drop fails, also
        // of one that is gone already: only a capability still held is an error then.
        for &cap in supported_caps() {
            if !bounding.contains(&cap)
                && let Err(e) = caps::drop(None, CapSet::Bounding, cap)
                && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(true)
            {
                return Err(e).with_context(|| format!("drop {cap} from the bounding set"));
            }
        }
    }
    let user = process.user();
    let _ = nix::sys::prctl::set_keepcaps(true);
    let groups: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    // setgroups is refused in a user namespace whose setgroups file says "deny".
    if let Err(e) = setgroups(&groups)
        && !groups.is_empty()
    {
        return Err(e).context("setgroups (process.user.additionalGids)");
    }
    let gid = Gid::from_raw(user.gid());
    let uid = Uid::from_raw(user.uid());
    setresgid(gid, gid, gid)
        .with_context(|| format!("setgid {} (process.user.gid)", user.gid()))?;
    setresuid(uid, uid, uid)
        .with_context(|| format!("setuid {} (process.user.uid)", user.uid()))?;
    let _ = nix::sys::prctl::set_keepcaps(false);
    if let Some(umask) = user.umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    }
    set_caps(caps)
}

fn set_caps(caps: Option<&LinuxCapabilities>) -> Result<()> {
    let empty = LinuxCapabilities::default();
    let c = caps.unwrap_or(&empty);
    // Without a capabilities object the process gets none (as runc).
    let none = caps.is_none();
    let pick = |s: &Option<Capabilities>| {
        if none {
            HashSet::new()
        } else {
            to_caps(s.as_ref())
        }
    };
    let permitted = pick(c.permitted());
    // Name what the kernel would refuse with a bare EPERM: a capability lrun's own caller
    // lacks (so this process cannot hold it), or an effective one that is not permitted.
    let have = caps::read(None, CapSet::Permitted).context("read permitted capabilities")?;
    let missing = |set: &HashSet<caps::Capability>| {
        let mut m: Vec<String> = set.difference(&have).map(|c| c.to_string()).collect();
        m.sort();
        m.join(", ")
    };
    for (field, set) in [
        ("permitted", &permitted),
        ("effective", &pick(c.effective())),
    ] {
        let m = missing(set);
        if !m.is_empty() {
            bail!(
                "process.capabilities.{field}: {m}: not permitted to lrun's caller, so the \
                 container cannot have it (capset: operation not permitted)"
            );
        }
    }
    // Each capset must keep effective within permitted: shrink effective before permitted.
    caps::set(None, CapSet::Inheritable, &pick(c.inheritable()))
        .context("set inheritable capabilities")?;
    caps::set(None, CapSet::Effective, &pick(c.effective()))
        .context("set effective capabilities")?;
    caps::set(None, CapSet::Permitted, &permitted).context("set permitted capabilities")?;
    let ambient = pick(c.ambient());
    caps::clear(None, CapSet::Ambient).context("clear ambient capabilities")?;
    for cap in ambient {
        // The kernel refuses an ambient capability that is not permitted and inheritable;
        // runc ignores those too.
        let _ = caps::raise(None, CapSet::Ambient, cap);
    }
    Ok(())
}

/// Names from config.json to the kernel's capabilities; ones this kernel lacks are skipped.
fn to_caps(set: Option<&Capabilities>) -> HashSet<caps::Capability> {
    let known = supported_caps();
    set.into_iter()
        .flatten()
        .filter_map(|c| format!("CAP_{c}").parse::<caps::Capability>().ok())
        .filter(|c| known.contains(c))
        .collect()
}

/// The capabilities this kernel knows. `caps` finds them with one PR_CAPBSET_READ per
/// capability it knows of; asked once per set (and per bounding-set check) that was ~290
/// prctl calls in every container's init, so the answer is kept for the process.
fn supported_caps() -> &'static HashSet<caps::Capability> {
    static SUPPORTED: std::sync::OnceLock<HashSet<caps::Capability>> = std::sync::OnceLock::new();
    SUPPORTED.get_or_init(caps::runtime::thread_all_supported)
}

pub fn set_no_new_privs() -> Result<()> {
    nix::sys::prctl::set_no_new_privs().context("prctl(PR_SET_NO_NEW_PRIVS)")
}

/// Change to process.cwd, then check that it lies inside the container's root: a path through
/// an fd (`/proc/self/fd/N`) can lead anywhere that fd points to. With `create_missing`, a
/// missing directory is created first (as runc does for the init).
pub fn enter_cwd(cwd: &Path, create_missing: bool) -> Result<()> {
    if let Err(e) = std::env::set_current_dir(cwd) {
        if !create_missing || e.kind() != std::io::ErrorKind::NotFound {
            return Err(e).with_context(|| format!("process.cwd {}", cwd.display()));
        }
        std::fs::create_dir_all(cwd)
            .with_context(|| format!("create process.cwd {}", cwd.display()))?;
        std::env::set_current_dir(cwd).with_context(|| format!("process.cwd {}", cwd.display()))?;
    }
    if !cwd_is_under_root().with_context(|| format!("process.cwd {}", cwd.display()))? {
        bail!(
            "process.cwd {}: leads outside the container's root filesystem",
            cwd.display()
        );
    }
    Ok(())
}

/// Whether the working directory can be reached from the process's root. The kernel's
/// getcwd(2) prefixes "(unreachable)" otherwise (glibc's wrapper hides that as ENOENT).
fn cwd_is_under_root() -> Result<bool> {
    let mut buf = vec![0u8; 8192];
    // SAFETY: getcwd writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).context("getcwd");
    }
    Ok(cwd_text_is_reachable(&buf[..rc as usize]))
}

fn cwd_text_is_reachable(text: &[u8]) -> bool {
    text.first() == Some(&b'/')
}

/// Find process.args[0] as Go's `exec.LookPath` does inside runc, using the container's PATH
/// (call after pivot_root, so the lookup happens inside the container). The error text is
/// runc's, `exec: "ARG0": REASON`, with Go's lower-case errno words: docker, podman and
/// containerd map "executable file not found in $PATH" and "no such file or directory" to exit
/// 127, "permission denied" and "is a directory" to 126 (runtime-spec/engines.md).
pub fn find_executable(arg0: &str, env: &[String]) -> Result<PathBuf> {
    let fail = |reason: String| anyhow::anyhow!("exec: {arg0:?}: {reason}");
    if arg0.contains('/') {
        let p = PathBuf::from(arg0);
        return match check_executable(&p) {
            Ok(()) => Ok(p),
            Err(reason) => Err(fail(reason)),
        };
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':') {
        // Go: an empty PATH entry means the current directory.
        let dir = if dir.is_empty() { "." } else { dir };
        let p = Path::new(dir).join(arg0);
        if check_executable(&p).is_ok() {
            return Ok(p);
        }
    }
    Err(fail("executable file not found in $PATH".into()))
}

/// Go's `exec.findExecutable`: stat (following links), then a directory is EISDIR and a file
/// without any x bit is EACCES. The reason as Go prints it.
fn check_executable(p: &Path) -> std::result::Result<(), String> {
    let m = match std::fs::metadata(p) {
        Ok(m) => m,
        Err(e) => return Err(format!("stat {}: {}", p.display(), io_error_text(&e))),
    };
    if m.is_dir() {
        return Err(errno_text(nix::errno::Errno::EISDIR));
    }
    if m.permissions().mode() & 0o111 == 0 {
        return Err(errno_text(nix::errno::Errno::EACCES));
    }
    Ok(())
}

/// An errno as Go prints it ("no such file or directory"): strerror with a lower-case first
/// letter. docker's CLI matches these words case-sensitively.
pub fn errno_text(errno: nix::errno::Errno) -> String {
    let desc = errno.desc();
    let mut chars = desc.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => desc.to_string(),
    }
}

fn io_error_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => errno_text(nix::errno::Errno::from_raw(n)),
        None => e.to_string(),
    }
}

pub fn cstrings(v: &[String]) -> Result<Vec<CString>> {
    v.iter()
        .map(|s| CString::new(s.as_bytes()).with_context(|| format!("{s:?} contains a NUL byte")))
        .collect()
}

pub fn path_cstring(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).context("path contains a NUL byte")
}

/// Reset what lrun changed in its own process and the child inherited: the signal mask and
/// ignored signals (Rust ignores SIGPIPE; ignored dispositions survive exec).
pub fn reset_signals() {
    // SAFETY: plain libc calls on local data.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
}

/// Leave only stdio and the first `preserve` extra fds open across exec.
pub fn close_fds_on_exec(preserve: i32) {
    crate::fds::cloexec_from(3 + preserve.max(0));
    crate::fds::keep_open_across_exec(preserve);
}

/// PR_SET_DUMPABLE. lrun runs non-dumpable from its first line: until `execve` a process in
/// the container's namespaces is still lrun's binary running as root, and a dumpable one would
/// let the container open `/proc/PID/exe` for writing (CVE-2019-5736) or ptrace it. execve
/// resets the flag for the container's program.
pub fn set_dumpable(on: bool) -> Result<()> {
    nix::sys::prctl::set_dumpable(on).context("prctl(PR_SET_DUMPABLE)")
}

/// The security steps of every container process (init or exec) that can fail: fds, seccomp
/// when no_new_privs is off, user and groups, capabilities, no_new_privs. They run before the
/// process reports ready (the init: before it waits for `start`), so a capability the caller
/// lacks, an unmapped id or a bad set fails `create` or `exec` itself, as in runc (whose
/// finalizeNamespace runs before the exec fifo wait) and crun. Nothing the process still does
/// afterwards needs privilege: writing fds it holds, running startContainer hooks (as the
/// container's user, as runc and crun do), and execve.
///
/// Without no_new_privs, loading a filter needs CAP_SYS_ADMIN, so it comes before the
/// capabilities are dropped; with it, the filter waits (`Late`) until just before execve, so
/// as few of lrun's own syscalls as possible must pass it.
pub fn secure<'a>(
    process: &Process,
    seccomp: Option<&'a crate::seccomp::Filter>,
    mut agent: Option<crate::seccomp::Agent>,
    preserve_fds: i32,
) -> Result<Late<'a>> {
    // First: the filter may deny close_range, and a caller's fd must not reach the program.
    close_fds_on_exec(preserve_fds);
    let nnp = process.no_new_privileges() == Some(true);
    if let (Some(f), false) = (seccomp, nnp) {
        load_filter(f, &mut agent)?;
    }
    set_identity(process)?;
    if !nnp {
        return Ok(Late {
            filter: None,
            agent: None,
        });
    }
    set_no_new_privs()?;
    Ok(Late {
        filter: seccomp,
        agent,
    })
}

/// What `secure` left for the last moment: a seccomp filter under no_new_privs.
pub struct Late<'a> {
    filter: Option<&'a crate::seccomp::Filter>,
    agent: Option<crate::seccomp::Agent>,
}

impl Late<'_> {
    /// Load the filter, if one waits (call once, just before the last steps).
    pub fn load_filter(&mut self) -> Result<()> {
        match self.filter.take() {
            Some(f) => load_filter(f, &mut self.agent),
            None => Ok(()),
        }
    }
}

/// The very last step: clean signals and exec. Returns only on failure.
pub fn exec(exe: &CString, argv: &[CString], envp: &[CString]) -> Result<std::convert::Infallible> {
    reset_signals();
    let Err(errno) = nix::unistd::execve(exe, argv, envp);
    // runc's words for a late exec failure (ENOEXEC, a missing ELF interpreter, a program
    // removed since create).
    bail!("exec {}: {}", exe.to_string_lossy(), errno_text(errno))
}

/// Load the filter; a SCMP_ACT_NOTIFY listener goes to the agent (the spec: after the filter
/// is loaded). Processes run by `exec` send theirs to the same agent (their own filter instance).
fn load_filter(
    f: &crate::seccomp::Filter,
    agent: &mut Option<crate::seccomp::Agent>,
) -> Result<()> {
    if let Some(listener) = f.load()?
        && let Some(a) = agent.take()
    {
        a.send(std::os::fd::AsFd::as_fd(&listener))?;
    }
    Ok(())
}

/// process.ioPriority, process.scheduler and linux.personality: per-process settings that
/// survive exec. Applied by the container process itself just before it execs.
pub fn set_scheduling(
    process: &Process,
    personality: Option<&oci_spec::runtime::LinuxPersonality>,
) -> Result<()> {
    if let Some(p) = personality {
        use oci_spec::runtime::LinuxPersonalityDomain as D;
        let domain = match p.domain() {
            D::PerLinux => 0x0000,
            D::PerLinux32 => 0x0008,
        };
        // SAFETY: personality(2) takes a plain integer.
        if unsafe { libc::personality(domain) } == -1 {
            return Err(std::io::Error::last_os_error()).context("linux.personality");
        }
    }
    if let Some(io) = process.io_priority() {
        use oci_spec::runtime::IOPriorityClass as C;
        let class = match io.class() {
            C::IoprioClassRt => 1,
            C::IoprioClassBe => 2,
            C::IoprioClassIdle => 3,
        };
        let value = (class << 13) | (io.priority() & 0x1fff);
        // SAFETY: ioprio_set(IOPRIO_WHO_PROCESS, 0 = self, value).
        if unsafe { libc::syscall(libc::SYS_ioprio_set, 1, 0, value) } != 0 {
            return Err(std::io::Error::last_os_error()).context("process.ioPriority");
        }
    }
    if let Some(s) = process.scheduler() {
        set_scheduler(s)?;
    }
    Ok(())
}

/// The kernel's struct sched_attr (sched_setattr(2)).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

fn set_scheduler(s: &oci_spec::runtime::Scheduler) -> Result<()> {
    use oci_spec::runtime::{LinuxSchedulerFlag as F, LinuxSchedulerPolicy as P};
    let policy = match s.policy() {
        P::SchedOther => 0,
        P::SchedFifo => 1,
        P::SchedRr => 2,
        P::SchedBatch => 3,
        P::SchedIso => 4,
        P::SchedIdle => 5,
        P::SchedDeadline => 6,
    };
    let flags = s.flags().iter().flatten().fold(0u64, |acc, f| {
        acc | match f {
            F::SchedResetOnFork => 0x01,
            F::SchedFlagReclaim => 0x02,
            F::SchedFlagDLOverrun => 0x04,
            F::SchedFlagKeepPolicy => 0x08,
            F::SchedFlagKeepParams => 0x10,
            F::SchedFlagUtilClampMin => 0x20,
            F::SchedFlagUtilClampMax => 0x40,
        }
    });
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy,
        flags,
        nice: s.nice().unwrap_or(0),
        priority: s.priority().unwrap_or(0) as u32,
        runtime: s.runtime().unwrap_or(0),
        deadline: s.deadline().unwrap_or(0),
        period: s.period().unwrap_or(0),
    };
    // SAFETY: sched_setattr(0 = self, attr, flags 0) with a correctly sized struct.
    if unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("process.scheduler (sched_setattr)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_cwd_text_is_refused() {
        assert!(cwd_text_is_reachable(b"/srv/app\0"));
        assert!(!cwd_text_is_reachable(b"(unreachable)/etc\0"));
        assert!(!cwd_text_is_reachable(b""));
    }

    #[test]
    fn executable_lookup_speaks_gos_words() {
        let err = |a: &str, env: &[String]| format!("{:#}", find_executable(a, env).unwrap_err());
        assert_eq!(
            err("/no/such/prog", &[]),
            "exec: \"/no/such/prog\": stat /no/such/prog: no such file or directory"
        );
        assert_eq!(
            err("/etc/passwd", &[]),
            "exec: \"/etc/passwd\": permission denied"
        );
        assert_eq!(err("/etc", &[]), "exec: \"/etc\": is a directory");
        assert_eq!(
            err("/etc/passwd/x", &[]),
            "exec: \"/etc/passwd/x\": stat /etc/passwd/x: not a directory"
        );
        let path = ["PATH=/nonexistent:/etc".to_string()];
        assert_eq!(
            err("passwd", &path),
            "exec: \"passwd\": executable file not found in $PATH"
        );
        let path = ["PATH=/nonexistent:/bin".to_string()];
        assert_eq!(find_executable("sh", &path).unwrap(), Path::new("/bin/sh"));
    }

    #[test]
    fn own_cwd_is_under_root() {
        assert!(cwd_is_under_root().expect("getcwd"));
    }
}
