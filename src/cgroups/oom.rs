//! Notice OOM kills as they happen: v1 signals an eventfd registered on memory.oom_control,
//! v2 changes memory.events (watched with inotify).

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::fs;

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

impl OomWatcher {
    /// Watch a cgroup2 directory (`last`: the OOM kills counted so far).
    pub fn v2(dir: &Path, last: u64) -> Result<Self> {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .context("inotify_init1")?;
        for file in ["memory.events", "cgroup.events"] {
            let path = dir.join(file);
            inotify
                .add_watch(&path, AddWatchFlags::IN_MODIFY)
                .with_context(|| format!("inotify_add_watch {}", path.display()))?;
        }
        Ok(OomWatcher {
            fd: OwnedFd::from(inotify),
            dir: dir.to_path_buf(),
            v2: true,
            last,
            _control: None,
        })
    }

    /// Watch a v1 memory cgroup (`last`: the OOM kills counted so far).
    pub fn v1(dir: &Path, last: u64) -> Result<Self> {
        let control = File::open(dir.join("memory.oom_control"))
            .with_context(|| format!("open {}/memory.oom_control", dir.display()))?;
        let fd = OwnedFd::from(
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC).context("eventfd")?,
        );
        fs::write(
            dir,
            "cgroup.event_control",
            &format!("{} {}", fd.as_raw_fd(), control.as_raw_fd()),
        )?;
        Ok(OomWatcher {
            fd,
            dir: dir.to_path_buf(),
            v2: false,
            last,
            _control: Some(control),
        })
    }

    /// Wait up to `timeout` for an OOM kill.
    pub fn wait(&mut self, timeout: Duration) -> Result<Wake> {
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
        let mut pfd = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        let n = match poll(&mut pfd, timeout) {
            Ok(n) => n,
            Err(Errno::EINTR) => return Ok(Wake::Timeout),
            Err(e) => return Err(e).context("poll for OOM events"),
        };
        if n == 0 {
            return Ok(Wake::Timeout);
        }
        // Drain: the eventfd counter, or queued inotify records.
        let mut buf = [0u8; 4096];
        let _ = nix::unistd::read(&self.fd, &mut buf);
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
        // As runc's notifyOnOOM: each wake of the eventfd is an OOM. The counter (kernels
        // before 4.13 have none) only says how many kills; with the OOM killer disabled the
        // event means "under OOM", no kill counted.
        let text = fs::read(&self.dir, "memory.oom_control")?;
        let new = match fs::parse_flat_keyed(&text).get("oom_kill").copied() {
            Some(k) => {
                let new = k.saturating_sub(self.last);
                self.last = k;
                new
            }
            None => 0,
        };
        Ok(Wake::Oom(new.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v1 memory.oom_control without an oom_kill counter (kernels before 4.13): the wake is
    /// still an OOM, not an error that ends `events`.
    #[test]
    fn a_v1_wake_without_a_kill_counter_is_an_oom() {
        let dir = std::env::temp_dir().join(format!("lrun-oom-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\n",
        )
        .unwrap();
        let fd = OwnedFd::from(EventFd::from_value_and_flags(1, EfdFlags::EFD_CLOEXEC).unwrap());
        let mut w = OomWatcher {
            fd,
            dir: dir.clone(),
            v2: false,
            last: 0,
            _control: None,
        };
        let woke = w.wait(Duration::from_secs(1));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(woke, Ok(Wake::Oom(1))), "{:?}", woke.err());
    }
}
