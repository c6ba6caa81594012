//! File descriptors lrun inherits from its caller and passes on to container processes.
//!
//! Every fd a container process can reach before `execve` is an attack surface: a host
//! directory becomes a way out through `process.cwd` = `/proc/self/fd/N` (CVE-2024-21626), a
//! host file is simply readable. So `create`, `run` and `exec` close what the caller left open
//! at their start (all but stdio and what `--preserve-fds`/LISTEN_FDS ask for), everything lrun
//! opens itself is close-on-exec, and the container process marks the rest close-on-exec
//! before it loads its seccomp filter (which may deny close_range).

use std::os::fd::RawFd;

/// Close every fd from `first` up, for real (not only close-on-exec: the container's init
/// runs lrun's code, and a process's own fds are reachable through /proc/self/fd).
pub fn close_from(first: RawFd) {
    if close_range(first, 0).is_ok() {
        return;
    }
    // close_range needs Linux 5.9: close what /proc lists, or else every possible number.
    let listed: Option<Vec<RawFd>> = std::fs::read_dir("/proc/self/fd").ok().map(|d| {
        d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    });
    match listed {
        Some(fds) => fds.into_iter().filter(|fd| *fd >= first).for_each(|fd| {
            // SAFETY: closing an fd number; the listing's own fd is already closed (EBADF).
            unsafe { libc::close(fd) };
        }),
        None => (first..fd_limit()).for_each(|fd| {
            // SAFETY: as above.
            unsafe { libc::close(fd) };
        }),
    }
}

/// Mark every fd from `first` up close-on-exec. Allocates nothing and takes no locks, so it
/// may run between fork and exec.
pub fn cloexec_from(first: RawFd) {
    if close_range(first, libc::CLOSE_RANGE_CLOEXEC).is_ok() {
        return;
    }
    // close_range may be missing (Linux < 5.11 for the flag) or denied by a seccomp filter.
    for fd in first..fd_limit() {
        // SAFETY: fcntl on an fd number; unused numbers fail with EBADF.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// Let fds `3..3+count` (the ones `--preserve-fds` names) survive exec.
pub fn keep_open_across_exec(count: i32) {
    for fd in 3..3 + count.max(0) {
        // SAFETY: fcntl on fds the caller asked to pass through.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            }
        }
    }
}

fn close_range(first: RawFd, flags: libc::c_uint) -> std::io::Result<()> {
    let first = u32::try_from(first.max(0)).unwrap_or(u32::MAX);
    // SAFETY: close_range(2) with plain integers.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One past the highest fd number this process can hold (the hard RLIMIT_NOFILE: a lowered
/// soft limit does not close fds above it).
fn fd_limit() -> RawFd {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0 {
        rl.rlim_max.max(rl.rlim_cur)
    } else {
        65536
    };
    // RLIM_INFINITY or a huge limit: the kernel's own ceiling (fs.nr_open) is 1 << 20 by default.
    RawFd::try_from(max.min(1 << 20)).unwrap_or(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn is_cloexec(fd: RawFd) -> bool {
        // SAFETY: fcntl on an fd number.
        unsafe { libc::fcntl(fd, libc::F_GETFD) & libc::FD_CLOEXEC != 0 }
    }

    #[test]
    fn cloexec_from_marks_fds_from_the_given_number_up() {
        // A dup without O_CLOEXEC, above anything the test harness keeps at low numbers.
        let f = std::fs::File::open("/proc/self/status").expect("open");
        // SAFETY: dup to a free high number.
        let high = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_DUPFD, 900) };
        assert!(high >= 900);
        assert!(!is_cloexec(high));
        cloexec_from(high);
        assert!(is_cloexec(high));
        // SAFETY: our own fd.
        unsafe { libc::close(high) };
    }
}
