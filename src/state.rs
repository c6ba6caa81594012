//! The state directory: one directory per container under the state root, holding
//! `state.json` (written atomically), `exec.fifo` while the container waits for `start`, and a
//! copy of the config for `exec`. There is no daemon: every command reads this directory and
//! asks the kernel (/proc) whether the init process still lives.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use oci_spec::runtime::Hooks;
use serde::{Deserialize, Serialize};

use crate::cgroup_record::CgroupRecord;
use crate::layers;
use crate::utils::{validate_id, write_atomic};

pub const STATE_FILE: &str = "state.json";
pub const FIFO_FILE: &str = "exec.fifo";
pub const CONFIG_FILE: &str = "config.json";

/// Status as the OCI runtime spec names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Stopped,
    Paused,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
            Status::Paused => "paused",
        };
        f.write_str(s)
    }
}

/// What lrun records about a container. Resources are recorded before they are acquired, so
/// `delete --force` can release them after a crash at any point of `create`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    pub oci_version: String,
    pub id: String,
    /// Host pid of the container's init; 0 until it exists.
    pub pid: i32,
    /// Start time of `pid` (field 22 of /proc/PID/stat), to notice pid reuse.
    pub pid_start_time: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// Set once create has finished; a container without it is still being created or its
    /// creator died.
    #[serde(default)]
    pub created_ok: bool,
    #[serde(default)]
    pub cgroups: CgroupRecord,
    /// The root came from layers (lrun mounted it and must release it).
    #[serde(default)]
    pub layered: bool,
    /// What the layered root takes, recorded before it is taken (containers created before
    /// this field keep it in layers.json: `layers::release_root` reads that when this is
    /// `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<layers::RootRecord>,
    #[serde(default)]
    pub hooks: Option<Hooks>,
    /// The NOTIFY_SOCKET lrun was given, relayed to by `start` (or `run`).
    #[serde(default)]
    pub notify_socket: Option<PathBuf>,
}

/// The OCI state document (runtime.md "State"), plus the fields runc adds that tools read.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState<'a> {
    pub oci_version: &'a str,
    pub id: &'a str,
    pub status: Status,
    pub pid: i32,
    pub bundle: &'a Path,
    pub rootfs: &'a Path,
    pub created: &'a str,
    pub owner: &'a str,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub annotations: &'a HashMap<String, String>,
}

impl ContainerState {
    /// The status the spec asks for, worked out from the kernel, not from a cached field.
    /// `is_frozen` tells paused from running by the container's cgroups (the engine passes
    /// `cgroups::is_frozen`: state only records where they are).
    pub fn status(&self, dir: &Path, is_frozen: impl FnOnce(&CgroupRecord) -> bool) -> Status {
        if !self.created_ok {
            // No pid yet, or a pid that still lives: create is under way (or its creator died).
            let alive = self.pid == 0 || process_alive(self.pid, self.pid_start_time);
            return if alive {
                Status::Creating
            } else {
                Status::Stopped
            };
        }
        if !process_alive(self.pid, self.pid_start_time) {
            return Status::Stopped;
        }
        if dir.join(FIFO_FILE).exists() {
            return Status::Created;
        }
        if is_frozen(&self.cgroups) {
            return Status::Paused;
        }
        Status::Running
    }

    pub fn oci(&self, status: Status) -> OciState<'_> {
        OciState {
            oci_version: &self.oci_version,
            id: &self.id,
            status,
            // The spec: pid is required when the process is alive (created or running).
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            bundle: &self.bundle,
            rootfs: &self.rootfs,
            created: &self.created,
            owner: &self.owner,
            annotations: &self.annotations,
        }
    }
}

/// The start time of a process, or None if it is gone or a zombie (a zombie has exited).
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = crate::utils::read_small_string(Path::new(&format!("/proc/{pid}/stat"))).ok()?;
    // The command name may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // rest starts at field 3 (state); starttime is field 22.
    fields.nth(18)?.parse().ok()
}

pub fn process_alive(pid: i32, start_time: u64) -> bool {
    pid > 0 && process_start_time(pid) == Some(start_time)
}

/// The state root directory (`--root`).
pub struct StateRoot {
    pub path: PathBuf,
}

impl StateRoot {
    pub fn new(path: &Path) -> Self {
        StateRoot {
            path: path.to_path_buf(),
        }
    }

    pub fn container_dir(&self, id: &str) -> Result<PathBuf> {
        validate_id(id)?;
        Ok(self.path.join(id))
    }

    /// Claim the id: mkdir is atomic, so two creates of one id cannot both succeed.
    pub fn claim(&self, id: &str) -> Result<PathBuf> {
        let dir = self.container_dir(id)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&self.path)
            .with_context(|| format!("create state root {}", self.path.display()))?;
        match fs::DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                bail!("container {id:?} already exists")
            }
            Err(e) => Err(e).with_context(|| format!("create {}", dir.display())),
        }
    }

    /// Load the recorded state of a container.
    pub fn load(&self, id: &str) -> Result<(PathBuf, ContainerState)> {
        let dir = self.container_dir(id)?;
        let path = dir.join(STATE_FILE);
        let text = match crate::utils::read_small(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if dir.exists() {
                    bail!(
                        "container {id:?} is still being created (or its creator died: use delete --force)"
                    )
                }
                // runc's words: containerd and podman match "does not exist".
                bail!("{id:?}: container does not exist")
            }
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        let st =
            serde_json::from_slice(&text).with_context(|| format!("parse {}", path.display()))?;
        Ok((dir, st))
    }

    /// Ids of every container directory.
    pub fn list(&self) -> Result<Vec<String>> {
        let entries = match fs::read_dir(&self.path) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("read {}", self.path.display())),
        };
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| validate_id(n).is_ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

pub fn save(dir: &Path, st: &ContainerState) -> Result<()> {
    let data = serde_json::to_vec(st).context("serialise state")?;
    write_atomic(&dir.join(STATE_FILE), &data, 0o600)
}

/// The layered-root record of the container whose state dir is `dir` (`None`: none, or its
/// state cannot be read), from state.json or, for containers created before the record moved
/// there, layers.json. `LayerContext::recorded` for gc.
pub fn recorded_root(dir: &Path) -> Option<layers::RootRecord> {
    /// Only the field gc needs, so the rest of the state cannot make it unreadable.
    #[derive(Deserialize)]
    struct LayersOnly {
        #[serde(default)]
        layers: Option<layers::RootRecord>,
    }
    let from_state = fs::read(dir.join(STATE_FILE))
        .ok()
        .and_then(|t| serde_json::from_slice::<LayersOnly>(&t).ok())
        .and_then(|st| st.layers);
    from_state.or_else(|| layers::root::read_legacy_record(dir).ok().flatten())
}

/// An exclusive lock on a container directory, held until dropped. Serialises start, kill,
/// delete and the end of create on one container across processes.
pub struct DirLock {
    _file: File,
}

pub fn lock(dir: &Path) -> Result<DirLock> {
    let file = File::open(dir).with_context(|| format!("open {}", dir.display()))?;
    crate::lockfile::flock_exclusive(&file, true)
        .with_context(|| format!("flock {}", dir.display()))?;
    Ok(DirLock { _file: file })
}

/// `lock` without waiting: None when another process holds it (a create or delete under way).
pub fn try_lock(dir: &Path) -> Result<Option<DirLock>> {
    let file = File::open(dir).with_context(|| format!("open {}", dir.display()))?;
    let locked = crate::lockfile::flock_exclusive(&file, false)
        .with_context(|| format!("flock {}", dir.display()))?;
    Ok(locked.then_some(DirLock { _file: file }))
}

impl DirLock {
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self._file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_has_start_time() {
        let pid = std::process::id() as i32;
        let t = process_start_time(pid).expect("start time");
        assert!(process_alive(pid, t));
        assert!(!process_alive(pid, t + 1));
    }
}
