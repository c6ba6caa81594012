//! cgroups v1 and v2 behind one interface. STUB: filled in by the cgroups work (issue 7).

use std::path::{Path, PathBuf};

use anyhow::Result;
use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

/// The cgroups of one container; stored in the container's state so `delete` can find them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manager {
    /// Directories created for this container, one per mounted hierarchy.
    pub paths: Vec<PathBuf>,
}

impl Manager {
    /// Work out where the container's cgroups go. A relative or absent `cgroups_path` nests
    /// beneath the caller's own cgroup in each hierarchy, as runc does.
    pub fn new(_cgroups_path: Option<&Path>, _id: &str) -> Result<Self> {
        Ok(Self::default())
    }
    /// Create the directories (before any process joins).
    pub fn create(&self) -> Result<()> {
        Ok(())
    }
    /// Apply limits.
    pub fn set(&self, _resources: &LinuxResources) -> Result<()> {
        Ok(())
    }
    /// Move a process into the container's cgroups.
    pub fn add_pid(&self, _pid: i32) -> Result<()> {
        Ok(())
    }
    /// Kill what is left inside and remove the directories. Idempotent.
    pub fn destroy(&self) -> Result<()> {
        Ok(())
    }
    pub fn freeze(&self) -> Result<()> {
        anyhow::bail!("pause is not supported yet")
    }
    pub fn thaw(&self) -> Result<()> {
        anyhow::bail!("resume is not supported yet")
    }
    pub fn is_frozen(&self) -> Result<bool> {
        Ok(false)
    }
    /// Pids of every process in the container's cgroups.
    pub fn pids(&self) -> Result<Vec<i32>> {
        Ok(Vec::new())
    }
}
