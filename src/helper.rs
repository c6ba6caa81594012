//! The helper binary, `lrun-fetch`, that runs what needs the network (`cli::net`).
//!
//! The runtime binary stays small because it does not link the HTTP/TLS and registry code:
//! every start maps, relocates and (on a cold page cache) reads less (bench item 6, peak RSS;
//! item 5, cold start). The helper is found beside the runtime binary (the directory of
//! /proc/self/exe, never PATH), and since root executes it, it is trusted only as the node
//! configuration file is: owned by root (or the user running lrun) and writable by nobody
//! else, and so is its directory. It is checked on the opened file and executed from that
//! file descriptor, so what was checked is what runs.

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;

use crate::distribution::PullTarget;
use crate::layers::LayerRef;

/// The helper's file name, in the runtime binary's directory.
pub const NAME: &str = "lrun-fetch";

/// The helper beside this binary, opened and checked: (its path, an fd to exec).
pub fn open_helper() -> Result<(PathBuf, OwnedFd)> {
    let exe = std::fs::read_link("/proc/self/exe").context("read /proc/self/exe")?;
    let dir = exe
        .parent()
        .with_context(|| format!("{}: no directory", exe.display()))?;
    let path = dir.join(NAME);
    let refuse = |what: &Path, problem: String| {
        anyhow::anyhow!(
            "helper {} {problem}: refusing it (lrun runs as root and executes it)",
            what.display()
        )
    };
    let dm = std::fs::metadata(dir).with_context(|| format!("helper {}", dir.display()))?;
    if let Some(p) = crate::node_config::trust_problem(&dm, true) {
        return Err(refuse(dir, p));
    }
    let fd = open(&path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).with_context(|| {
        format!(
            "helper {}: layer pull/publish and image import need {NAME} installed beside lrun",
            path.display()
        )
    })?;
    let m = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .with_context(|| format!("helper {}: fstat", path.display()))?;
    if let Some(p) = crate::node_config::trust_problem(&m, false) {
        return Err(refuse(&path, p));
    }
    Ok((path, fd))
}

/// `layer pull`, `layer publish`, `image import`: replace this process with the helper, on
/// the same command line and environment (it parses them as this binary did).
pub fn exec_verb() -> Result<i32> {
    let (path, fd) = open_helper()?;
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    if let Some(a0) = argv.first_mut() {
        *a0 = path.clone().into_os_string();
    }
    let argv = cstrings(argv)?;
    let env = cstrings(std::env::vars_os().map(|(k, v)| {
        let mut kv = k;
        kv.push("=");
        kv.push(v);
        kv
    }))?;
    let Err(e) = nix::unistd::fexecve(&fd, &argv, &env);
    bail!("exec helper {}: {e}", path.display())
}

fn cstrings(v: impl IntoIterator<Item = OsString>) -> Result<Vec<CString>> {
    v.into_iter()
        .map(|s| CString::new(s.as_bytes()).context("an argument or variable contains NUL"))
        .collect()
}

/// create's `--pull` from a server or registry: `lrun-fetch layer pull` as a child process,
/// with this runtime's state root, store and limits. Its report is not wanted (stdout may be
/// the container's); its error, if it fails, becomes this one's.
pub fn pull(t: &PullTarget, source: &str, refs: &[LayerRef]) -> Result<()> {
    let (path, fd) = open_helper()?;
    let limits = t.limits;
    let mut cmd = Command::new(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    cmd.arg0(&path)
        .arg("--root")
        .arg(t.root)
        .arg("--store")
        .arg(t.store)
        .args(["layer", "pull", "--stall-timeout"])
        .arg(limits.stall.as_secs_f64().to_string())
        .arg("--deadline")
        .arg(limits.deadline.map_or(0.0, |d| d.as_secs_f64()).to_string())
        .arg("--")
        .arg(source)
        .args(refs.iter().map(|r| r.to_string()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let parent = rustix::process::getpid();
    // SAFETY: between fork and exec only prctl, getppid and close_range/fcntl (no
    // allocation, no locks). The helper dies with the create that runs it, as an in-process
    // pull would; the fds a create passes to its container (--preserve-fds, LISTEN_FDS) are
    // not the helper's.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
                || rustix::process::getppid() != Some(parent)
            {
                return Err(std::io::Error::other("the create process is gone"));
            }
            crate::fds::cloexec_from(3);
            Ok(())
        });
    }
    let out = cmd
        .output()
        .with_context(|| format!("run helper {}", path.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr);
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().trim_start_matches("lrun: ").to_string());
    match last {
        Some(msg) => bail!("{msg}"),
        None => bail!("pull from {source}: {} {}", path.display(), out.status),
    }
}
