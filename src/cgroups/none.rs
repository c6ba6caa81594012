//! The driver for a host without any cgroup filesystem: nothing to create or remove, and a
//! clear error when a config asks for limits that could not be enforced.

use std::path::Path;

use anyhow::{Result, bail};
use oci_spec::runtime::LinuxResources;

use super::devices::Rule;
use super::oom::OomWatcher;
use super::{CgroupDriver, CgroupRecord, Stats, SubCgroups};

#[derive(Debug)]
pub struct NoCgroups;

impl CgroupDriver for NoCgroups {
    fn record(&self) -> CgroupRecord {
        CgroupRecord::default()
    }

    fn paths(&self) -> Vec<&Path> {
        Vec::new()
    }

    fn cgroup2_dir(&self) -> Option<&Path> {
        None
    }

    fn preflight(&self) -> Result<()> {
        Ok(())
    }

    fn create(&self) -> Result<()> {
        Ok(())
    }

    fn apply(&self, r: &LinuxResources, _devices: Option<&[Rule]>) -> Result<()> {
        if has_limits(r) {
            bail!("no cgroup filesystem is mounted: cannot apply linux.resources");
        }
        Ok(())
    }

    fn add_pid(&self, _pid: i32) -> Result<()> {
        Ok(())
    }

    fn sub_cgroup(&self, sub: &SubCgroups) -> Result<CgroupRecord> {
        if !sub.is_empty() {
            bail!("--cgroup: no cgroup filesystem is mounted");
        }
        Ok(CgroupRecord::default())
    }

    fn freeze(&self) -> Result<()> {
        bail!("no freezer: neither the v1 freezer nor cgroup2 is mounted")
    }

    fn thaw(&self) -> Result<()> {
        bail!("no freezer: neither the v1 freezer nor cgroup2 is mounted")
    }

    fn is_frozen(&self) -> Result<bool> {
        Ok(false)
    }

    fn pids(&self) -> Result<Vec<i32>> {
        Ok(Vec::new())
    }

    fn stats(&self) -> Result<Stats> {
        Ok(Stats::default())
    }

    fn oom_watcher(&self) -> Result<Option<OomWatcher>> {
        Ok(None)
    }

    fn destroy(&self) -> Result<()> {
        Ok(())
    }
}

/// Does `r` ask for anything a cgroup would have to enforce?
fn has_limits(r: &LinuxResources) -> bool {
    r.memory().is_some()
        || r.cpu().is_some()
        || r.pids().is_some_and(|p| p.limit() > 0)
        || r.block_io().is_some()
        || r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty())
        || r.unified().as_ref().is_some_and(|u| !u.is_empty())
}
