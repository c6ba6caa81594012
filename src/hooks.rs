//! Lifecycle hooks (config.md "POSIX-platform Hooks"): each gets the container state on stdin,
//! runs with its own args and env, and is killed after `timeout` seconds.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use oci_spec::runtime::{Hook, Spec};

/// Run hooks in order; the first failure stops the sequence (prestart, createRuntime,
/// createContainer, startContainer: runtime.md lifecycle steps 3-7).
/// `cwd`: the hook's working directory (runc's hooks inherit the cwd of the process that runs
/// them: see each caller); None keeps ours.
pub fn run_all(
    kind: &str,
    hooks: Option<&Vec<Hook>>,
    state_json: &[u8],
    cwd: Option<&Path>,
) -> Result<()> {
    for (i, h) in hooks.into_iter().flatten().enumerate() {
        run(h, state_json, cwd)
            .with_context(|| format!("hooks.{kind}[{i}] ({})", h.path().display()))?;
    }
    Ok(())
}

/// Run every hook in order, whatever the others did, and return each failure (poststart and
/// poststop: runtime-spec 1.2 runtime.md lifecycle steps 9 and 13, "the runtime MUST log a
/// warning, but the remaining hooks and lifecycle continue as if the hook had succeeded").
pub fn run_each(
    kind: &str,
    hooks: Option<&Vec<Hook>>,
    state_json: &[u8],
    cwd: Option<&Path>,
) -> Vec<anyhow::Error> {
    hooks
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, h)| {
            run(h, state_json, cwd)
                .with_context(|| format!("hooks.{kind}[{i}] ({})", h.path().display()))
                .err()
        })
        .collect()
}

pub fn run(hook: &Hook, state_json: &[u8], cwd: Option<&Path>) -> Result<()> {
    let args = hook.args().as_deref().unwrap_or_default();
    let mut cmd = Command::new(hook.path());
    if let Some((arg0, rest)) = args.split_first() {
        cmd.arg0(arg0).args(rest);
    }
    cmd.env_clear();
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    cmd.stdin(Stdio::piped());
    // A hook must not outlive an lrun that was killed while waiting for it, and gets stdio
    // only: not lrun's fds, nor ones `start` or `delete` inherited from their caller.
    // SAFETY: prctl, close_range and fcntl are async-signal-safe and cloexec_from allocates
    // nothing; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
            crate::fds::cloexec_from(3);
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("start hook")?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin must not make us fail (EPIPE).
        let _ = stdin.write_all(state_json);
    }
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    let mut nap = Duration::from_micros(200);
    let status = loop {
        if let Some(s) = child.try_wait().context("wait for hook")? {
            break s;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("timed out after {} s", hook.timeout().unwrap_or(0));
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(20));
    };
    if !status.success() {
        bail!("exited with {status}");
    }
    Ok(())
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
