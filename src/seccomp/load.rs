//! Loading a compiled program with seccomp(2) directly, not through libseccomp's seccomp_load:
//! the compiled program can then be made in the runtime before fork and loaded in the init
//! with one syscall and no allocation, and flags libseccomp 2.5 does not know
//! (SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV) still reach the kernel.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use anyhow::{Result, bail};

/// Load `program` into the calling thread. Returns the listener fd when `flags` asks for one.
pub(super) fn load(program: &[libc::sock_filter], flags: libc::c_ulong) -> Result<Option<OwnedFd>> {
    let Ok(len) = u16::try_from(program.len()) else {
        bail!(
            "seccomp filter has {} instructions, too many",
            program.len()
        );
    };
    let prog = libc::sock_fprog {
        len,
        // The kernel only reads through this pointer.
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: prog points at `program`, which outlives the call; the kernel copies it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        let hint = match err.raw_os_error() {
            Some(libc::EACCES) => {
                ": the process needs no_new_privs or CAP_SYS_ADMIN to load a filter"
            }
            Some(libc::EINVAL) => ": a flag or action is not supported by this kernel",
            _ => "",
        };
        bail!("seccomp(SECCOMP_SET_MODE_FILTER, flags {flags:#x}): {err}{hint}");
    }
    if flags & libc::SECCOMP_FILTER_FLAG_NEW_LISTENER != 0 {
        let Ok(fd) = i32::try_from(rc) else {
            bail!("seccomp(SECCOMP_SET_MODE_FILTER) returned {rc}, not a listener fd");
        };
        // SAFETY: with NEW_LISTENER the kernel returns a new fd (O_CLOEXEC) that nothing else owns.
        return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
    }
    if rc > 0 {
        // Without TSYNC_ESRCH, a TSYNC failure is reported as the id of a thread that could not
        // be synchronized, and the filter is not loaded.
        bail!("seccomp(SECCOMP_SET_MODE_FILTER, TSYNC): thread {rc} could not be synchronized");
    }
    Ok(None)
}
