//! Small helpers shared by several modules.

use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Format a time since the Unix epoch as RFC 3339 UTC with nanoseconds, as runc's state does.
pub fn rfc3339(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        since_epoch.subsec_nanos()
    )
}

// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Container ids become directory names: allow only what runc allows.
pub fn validate_id(id: &str) -> Result<()> {
    let ok_chars = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c));
    if id.is_empty() || id.len() > 1024 || !ok_chars || id == "." || id == ".." {
        bail!("invalid container id {id:?}: use letters, digits, '_', '+', '-' and '.' only");
    }
    Ok(())
}

/// Write a file so that readers see either the old or the new content, never a partial one.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(data)
        .with_context(|| format!("write {}", tmp.display()))?;
    drop(f);
    fs::rename(&tmp, path)
        .with_context(|| format!("rename {} to {}", tmp.display(), path.display()))
}

/// Read a small file whole: open, one read into a page-sized buffer (more only if it fills),
/// the read that finds EOF, close. `fs::read` and `fs::read_to_string` also stat the file for
/// a size hint and, with none (procfs, cgroupfs report 0), probe with 32-byte reads first:
/// twice the syscalls for the state files, /proc/PID/stat and cgroup files that `list` and
/// `state` read once per container.
pub fn read_small(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut f = fs::File::open(path)?;
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    Ok(buf)
}

/// `read_small` as text (invalid UTF-8 is an error, as `fs::read_to_string` has it).
pub fn read_small_string(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read_small(path)?)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Remove a file, treating "already gone" as success.
pub fn remove_file_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Proof that the process had one thread when it was made: fork (and clone without a new
/// stack) copies only the calling thread, so another thread holding a lock (the allocator's,
/// stdio's) would leave the child deadlocked. lrun starts no threads; this checks it.
pub struct SingleThreaded(());

impl SingleThreaded {
    /// Count our threads (/proc/self/stat, cheaper to make than status); more than one is an
    /// error, and so is not being able to tell.
    pub fn check() -> Result<Self> {
        let stat = fs::read_to_string("/proc/self/stat").context("read /proc/self/stat")?;
        // The command name may contain spaces and parentheses: split after the last ')'.
        // The rest starts at field 3 (state); num_threads is field 20.
        let threads: usize = stat
            .rfind(')')
            .and_then(|i| stat.get(i + 2..))
            .and_then(|rest| rest.split(' ').nth(17))
            .and_then(|n| n.parse().ok())
            .context("/proc/self/stat: no thread count")?;
        if threads != 1 {
            bail!("lrun has {threads} threads: forking without exec needs exactly one");
        }
        Ok(SingleThreaded(()))
    }
}

/// Which side of a fork we are on. The child gets the proof back: its only thread is the one
/// that forked.
pub enum Forked {
    Child(SingleThreaded),
    Parent(i32),
}

/// fork(2) with extra clone flags (namespaces, CLONE_PARENT): the child continues on a copy of
/// the caller's stack, like fork.
pub fn clone_fork(_one_thread: &SingleThreaded, flags: nix::sched::CloneFlags) -> Result<Forked> {
    let flags = flags.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: raw clone without a new stack behaves like fork, which is sound in a
    // single-threaded process (proven by the argument). Arguments per clone(2) on
    // x86_64/aarch64: flags, stack, parent_tid, child_tid, tls.
    let rc = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    match rc {
        rc if rc < 0 => Err(std::io::Error::last_os_error()).context("clone"),
        0 => Ok(Forked::Child(SingleThreaded(()))),
        pid => Ok(Forked::Parent(pid as i32)),
    }
}

/// `struct clone_args` of clone3(2), up to `cgroup` (CLONE_ARGS_SIZE_VER2, Linux 5.7).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `clone_fork`, with the child born in the cgroup2 directory `cgroup` (clone3 with
/// CLONE_INTO_CGROUP): no `cgroup.procs` write afterwards, and so none of the wait for the
/// cgroup threadgroup lock that write takes. Returns whether the child was placed there;
/// `false` (kernels before 5.7, or a cgroup the kernel refuses, e.g. one with processes in
/// an ancestor's domain) means a plain `clone_fork` ran and the caller must move the child.
pub fn clone_fork_into(
    one_thread: &SingleThreaded,
    flags: nix::sched::CloneFlags,
    cgroup: BorrowedFd<'_>,
) -> Result<(Forked, bool)> {
    let args = CloneArgs {
        flags: flags.bits() as u32 as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without a stack behaves like fork, which is sound in a single-threaded
    // process (proven by `one_thread`); `args` outlives the call and its size is passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match rc {
        0 => Ok((Forked::Child(SingleThreaded(())), true)),
        pid if pid > 0 => Ok((Forked::Parent(pid as i32), true)),
        _ => match std::io::Error::last_os_error().raw_os_error() {
            // No clone3 or no CLONE_INTO_CGROUP here, or a cgroup that cannot take the
            // child this way: the classic path.
            Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL | libc::EOPNOTSUPP | libc::EBUSY) => {
                Ok((clone_fork(one_thread, flags)?, false))
            }
            _ => Err(std::io::Error::last_os_error()).context("clone3 into the container's cgroup"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instant() {
        let t = Duration::new(1_700_000_000, 5);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.000000005Z");
        assert_eq!(rfc3339(Duration::ZERO), "1970-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn a_second_thread_is_detected() {
        // The test harness runs tests on threads of its own: this process has several.
        let err = SingleThreaded::check().err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("threads")));
    }

    #[test]
    fn ids_with_path_characters_are_rejected() {
        for bad in ["", ".", "..", "../x", "a/b", "a b", "x\n"] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["c1", "my-container_2", "a.b+c"] {
            assert!(validate_id(good).is_ok(), "{good:?} rejected");
        }
    }
}
