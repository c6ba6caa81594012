//! Helpers for lrun's own tests (unit and integration), kept in the library so both kinds
//! share one.
//!
//! Rust's test harness has no "skipped" outcome: a test that cannot run here (wrong cgroup
//! layout, a missing tool) calls `skip(reason)` and returns, so it is never a silent `ok`. The
//! line goes straight to stderr, past the harness's output capture, so it shows in every run
//! and CI log; when `LRUN_SKIP_LOG` names a file it is also appended there, for scripts/test
//! to count and list.

use std::io::Write;

/// Report the running test as skipped (the caller then returns).
pub fn skip(reason: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("?");
    let line = format!("skipped: {test}: {reason}\n");
    // One write(2) each, so lines from parallel tests and test binaries do not interleave.
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(log) = std::env::var_os("LRUN_SKIP_LOG")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
    {
        let _ = f.write_all(line.as_bytes());
    }
}
