//! What state.json keeps about a container's cgroups: which driver made them and where they
//! are. Plain data, so `state` needs no cgroup code; `cgroups::open_driver` turns a record back
//! into the driver that can act on it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Which cgroup driver manages a container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DriverKind {
    /// No cgroup filesystem was mounted: nothing to manage.
    #[default]
    #[serde(rename = "none")]
    None,
    /// cgroupfs on v1 hierarchies (the legacy layout, and the hybrid one with its cgroup2
    /// directory for process tracking).
    #[serde(rename = "cgroupfs-v1")]
    CgroupfsV1,
    /// cgroupfs on the unified (pure v2) hierarchy.
    #[serde(rename = "cgroupfs-v2")]
    CgroupfsV2,
    /// A transient systemd scope (`unit`), its directories handled as cgroupfs-v1 (when
    /// `v1` lists any) or cgroupfs-v2 would.
    #[serde(rename = "systemd")]
    Systemd,
}

/// The container's directory in one v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1Dir {
    /// The hierarchy's controllers, e.g. ["cpu", "cpuacct"] or ["name=systemd"].
    pub controllers: Vec<String>,
    pub path: PathBuf,
}

/// The cgroups of one container as recorded in state.json, written before they are created
/// so `delete --force` can find them after a crash at any point of `create`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "OnDisk")]
pub struct CgroupRecord {
    pub driver: DriverKind,
    /// One directory per mounted v1 hierarchy (cgroupfs-v1).
    pub v1: Vec<V1Dir>,
    /// The container's cgroup2 directory: its limits on cgroupfs-v2, process tracking only
    /// in a hybrid layout (cgroupfs-v1, best effort there).
    pub unified: Option<PathBuf>,
    /// The cgroup2 mount point, to enable controllers on the way down (cgroupfs-v2).
    pub unified_mount: Option<PathBuf>,
    /// The systemd unit (systemd).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

impl CgroupRecord {
    /// The container's directory in the v1 hierarchy that has `controller`.
    pub fn v1_dir(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|d| d.controllers.iter().any(|c| c == controller))
            .map(|d| d.path.as_path())
    }
}

/// What state.json may hold: this record, or the serialized manager of lrun before the
/// driver seam (`mode` instead of `driver`, same path fields), so containers created before
/// an upgrade can still be deleted. The oldest form (`{"paths": []}`) reads as no cgroups.
#[derive(Deserialize)]
struct OnDisk {
    #[serde(default)]
    driver: Option<DriverKind>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    v1: Vec<V1Dir>,
    #[serde(default)]
    unified: Option<PathBuf>,
    #[serde(default)]
    unified_mount: Option<PathBuf>,
    #[serde(default)]
    unit: Option<String>,
}

impl From<OnDisk> for CgroupRecord {
    fn from(d: OnDisk) -> Self {
        let driver = d.driver.unwrap_or(match d.mode.as_deref() {
            Some("legacy" | "hybrid") => DriverKind::CgroupfsV1,
            Some("unified") => DriverKind::CgroupfsV2,
            _ => DriverKind::None,
        });
        CgroupRecord {
            driver,
            v1: d.v1,
            unified: d.unified,
            unified_mount: d.unified_mount,
            unit: d.unit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_reads_the_old_manager_format() {
        let r = CgroupRecord {
            driver: DriverKind::CgroupfsV1,
            v1: vec![V1Dir {
                controllers: vec!["memory".into()],
                path: "/sys/fs/cgroup/memory/c1".into(),
            }],
            unified: Some("/sys/fs/cgroup/unified/c1".into()),
            unified_mount: None,
            unit: None,
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["driver"], "cgroupfs-v1");
        assert_eq!(serde_json::from_value::<CgroupRecord>(json).unwrap(), r);
        assert_eq!(
            r.v1_dir("memory"),
            Some(Path::new("/sys/fs/cgroup/memory/c1"))
        );

        // Written by lrun before the driver seam: the serialized manager.
        let old = r#"{"mode":"unified","v1":[],"unified":"/sys/fs/cgroup/c1",
                      "unified_mount":"/sys/fs/cgroup"}"#;
        let back: CgroupRecord = serde_json::from_str(old).unwrap();
        assert_eq!(back.driver, DriverKind::CgroupfsV2);
        assert_eq!(
            back.unified_mount.as_deref(),
            Some(Path::new("/sys/fs/cgroup"))
        );
        let hybrid: CgroupRecord = serde_json::from_str(r#"{"mode":"hybrid"}"#).unwrap();
        assert_eq!(hybrid.driver, DriverKind::CgroupfsV1);
        let oldest: CgroupRecord = serde_json::from_str(r#"{"paths":[]}"#).unwrap();
        assert_eq!(oldest, CgroupRecord::default());
    }
}
