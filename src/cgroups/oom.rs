//! Notice OOM kills as they happen: v1 signals an eventfd registered on memory.oom_control,
//! v2 changes memory.events (watched with inotify).

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{Manager, Mode, fs};

pub enum Wake {
    Timeout,
    /// This many new OOM kills (at least one).
    Oom(u64),
    /// The cgroup was removed: the container is gone.
    Gone,
}

pub struct OomWatcher {
    fd: OwnedFd,
    dir: PathBuf,
    v2: bool,
    last: u64,
    // v1: the registration lives as long as this file stays open.
    _control: Option<File>,
}

fn check(r: libc::c_int, what: &str) -> Result<libc::c_int> {
    if r < 0 {
        Err(std::io::Error::last_os_error()).context(what.to_string())
    } else {
        Ok(r)
    }
}

impl OomWatcher {
    /// None when the container has no memory cgroup to watch.
    pub fn new(m: &Manager) -> Result<Option<Self>> {
        let last = m.oom_kills().unwrap_or(0);
        if m.mode == Mode::Unified {
            let Some(dir) = m.unified.clone() else {
                return Ok(None);
            };
            // SAFETY: plain syscalls; the returned descriptor is owned right away.
            let fd = check(
                unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) },
                "inotify_init1",
            )?;
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            for file in ["memory.events", "cgroup.events"] {
                let path = std::ffi::CString::new(dir.join(file).as_os_str().as_encoded_bytes())
                    .context("cgroup path with a NUL byte")?;
                // SAFETY: fd and path are valid for the call.
                check(
                    unsafe {
                        libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), libc::IN_MODIFY)
                    },
                    &format!("inotify_add_watch {}", dir.join(file).display()),
                )?;
            }
            return Ok(Some(OomWatcher {
                fd,
                dir,
                v2: true,
                last,
                _control: None,
            }));
        }
        let Some(dir) = m.v1_dir("memory").map(|d| d.to_path_buf()) else {
            return Ok(None);
        };
        let control = File::open(dir.join("memory.oom_control"))
            .with_context(|| format!("open {}/memory.oom_control", dir.display()))?;
        // SAFETY: plain syscall; the returned descriptor is owned right away.
        let efd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) }, "eventfd")?;
        let fd = unsafe { OwnedFd::from_raw_fd(efd) };
        fs::write(
            &dir,
            "cgroup.event_control",
            &format!("{} {}", fd.as_raw_fd(), control.as_raw_fd()),
        )?;
        Ok(Some(OomWatcher {
            fd,
            dir,
            v2: false,
            last,
            _control: Some(control),
        }))
    }

    /// Wait up to `timeout` for an OOM kill.
    pub fn wait(&mut self, timeout: Duration) -> Result<Wake> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(Wake::Timeout);
            }
            return Err(e).context("poll for OOM events");
        }
        if n == 0 {
            return Ok(Wake::Timeout);
        }
        // Drain: the eventfd counter, or queued inotify records.
        let mut buf = [0u8; 4096];
        // SAFETY: buf is writable for its length.
        unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if !self.dir.exists() {
            return Ok(Wake::Gone);
        }
        if self.v2 {
            let ev = fs::parse_flat_keyed(&fs::read(&self.dir, "cgroup.events")?);
            let kills = fs::parse_flat_keyed(&fs::read(&self.dir, "memory.events")?)
                .get("oom_kill")
                .copied()
                .unwrap_or(0);
            let new = kills.saturating_sub(self.last);
            self.last = kills;
            if new > 0 {
                return Ok(Wake::Oom(new));
            }
            if ev.get("populated") == Some(&0) {
                return Ok(Wake::Gone);
            }
            return Ok(Wake::Timeout);
        }
        let text = fs::read(&self.dir, "memory.oom_control")?;
        let kills = fs::parse_flat_keyed(&text).get("oom_kill").copied();
        match kills {
            Some(k) => {
                let new = k.saturating_sub(self.last);
                self.last = k;
                // With the OOM killer disabled the event means "under OOM", no kill counted.
                Ok(Wake::Oom(new.max(1)))
            }
            None => bail!(
                "{}/memory.oom_control has no oom_kill counter",
                self.dir.display()
            ),
        }
    }
}
