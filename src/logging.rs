//! Error and debug output: stderr by default, or the `--log` file in text or JSON (runc's format,
//! which containerd and podman read back to show the runtime's error).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

struct Sink {
    file: Option<File>,
    format: LogFormat,
    debug: bool,
}

static SINK: OnceLock<Mutex<Sink>> = OnceLock::new();

/// Set up where messages go. A log file that cannot be opened falls back to stderr.
pub fn init(path: Option<&Path>, format: LogFormat, debug: bool) {
    use std::os::unix::fs::OpenOptionsExt;
    // As runc opens it: appended to (containerd reads back the last error entry), 0644.
    let file = path.and_then(|p| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o644)
            .open(p)
            .ok()
    });
    let _ = SINK.set(Mutex::new(Sink {
        file,
        format,
        debug,
    }));
}

fn write(level: &str, msg: &str) {
    let Some(sink) = SINK.get() else {
        eprintln!("lrun: {msg}");
        return;
    };
    let Ok(mut sink) = sink.lock() else { return };
    if level == "debug" && !sink.debug {
        return;
    }
    let format = sink.format;
    match sink.file.as_mut() {
        Some(f) => {
            let line = match format {
                LogFormat::Json => {
                    let time = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default();
                    serde_json::json!({
                        "level": level,
                        "msg": msg,
                        "time": crate::utils::rfc3339(time),
                    })
                    .to_string()
                }
                LogFormat::Text => format!("{level}: {msg}"),
            };
            let _ = writeln!(f, "{line}");
            // Users of a log file (podman, containerd) still expect errors on stderr too.
            if level == "error" {
                eprintln!("lrun: {msg}");
            }
        }
        None if level == "debug" => eprintln!("lrun: debug: {msg}"),
        None => eprintln!("lrun: {msg}"),
    }
}

/// Whether `--debug` asked for the step trace (to skip building messages nobody reads).
pub fn debugging() -> bool {
    SINK.get()
        .and_then(|s| s.lock().ok().map(|s| s.debug))
        .unwrap_or(false)
}

/// Report a failed command: one line with the whole context chain.
pub fn error(e: &anyhow::Error) {
    write("error", &format!("{e:#}"));
}

pub fn warn(msg: &str) {
    write("warning", msg);
}

pub fn debug(msg: &str) {
    write("debug", msg);
}
