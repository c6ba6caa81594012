//! `pause` and `resume`: freeze and thaw the container's cgroups.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use super::Runtime;
use crate::cgroups;
use crate::state::{self, ContainerState, DirLock, Status};

pub fn pause(rt: &Runtime, id: &str) -> Result<()> {
    let (_lock, dir, st) = load_locked(rt, id)?;
    let status = st.status(&dir, cgroups::is_frozen);
    if status != Status::Running {
        bail!("container {id:?} is {status}, not running: cannot pause");
    }
    cgroups::open_driver(&st.cgroups)
        .and_then(|d| d.freeze())
        .with_context(|| format!("pause container {id:?}"))
}

pub fn resume(rt: &Runtime, id: &str) -> Result<()> {
    let (_lock, dir, st) = load_locked(rt, id)?;
    let status = st.status(&dir, cgroups::is_frozen);
    if status != Status::Paused {
        bail!("container {id:?} is {status}, not paused: cannot resume");
    }
    cgroups::open_driver(&st.cgroups)
        .and_then(|d| d.thaw())
        .with_context(|| format!("resume container {id:?}"))
}

/// Load a container's state under its lock, so a concurrent delete cannot pull the cgroups
/// away between the status check and the change.
pub(super) fn load_locked(rt: &Runtime, id: &str) -> Result<(DirLock, PathBuf, ContainerState)> {
    let root = rt.states();
    // The first load gives the friendly "does not exist" errors; the second is under lock.
    let (dir, _) = root.load(id)?;
    let lock = state::lock(&dir)?;
    let (dir, st) = root.load(id)?;
    Ok((lock, dir, st))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::process::{Child, Command};

    use super::*;
    use crate::cgroups::CgroupDriver;
    use crate::state::StateRoot;

    /// A fake running container: a `sleep` in its own cgroups and a state.json written here,
    /// released on drop whatever the test did.
    struct Fake {
        id: String,
        rt: Runtime,
        child: Child,
        m: Box<dyn CgroupDriver>,
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = self.m.destroy();
            let _ = std::fs::remove_dir_all(&self.rt.root);
        }
    }

    fn fake(name: &str) -> Fake {
        let id = format!("lrun-cli-{}-{name}", std::process::id());
        let m = cgroups::new_driver(None, &id).unwrap();
        m.create().unwrap();
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let root: PathBuf = std::env::temp_dir().join(format!("{id}-root"));
        let rt = Runtime {
            root: root.clone(),
            store: root.join("store"),
            pull_limits: Default::default(),
            systemd_cgroup: false,
            idle_layers: crate::layers::IdlePolicy::NONE,
            remote_pull: crate::helper::pull,
        };
        let fake = Fake { id, rt, child, m };
        fake.m.add_pid(pid).unwrap();
        std::fs::create_dir_all(root.join(&fake.id)).unwrap();
        let st: ContainerState = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.2.0", "id": fake.id, "pid": pid,
            "pidStartTime": state::process_start_time(pid).unwrap(),
            "bundle": "/", "rootfs": "/", "created": "", "createdOk": true,
            "cgroups": fake.m.record(),
        }))
        .unwrap();
        state::save(&root.join(&fake.id), &st).unwrap();
        fake
    }

    fn status(f: &Fake) -> Status {
        let (dir, st) = StateRoot::new(&f.rt.root).load(&f.id).unwrap();
        st.status(&dir, cgroups::is_frozen)
    }

    #[test]
    fn pause_and_resume_follow_the_status() {
        let f = fake("pause");
        assert_eq!(status(&f), Status::Running);
        pause(&f.rt, &f.id).unwrap();
        assert_eq!(status(&f), Status::Paused);
        assert!(pause(&f.rt, &f.id).is_err(), "paused twice");
        resume(&f.rt, &f.id).unwrap();
        assert_eq!(status(&f), Status::Running);
        assert!(resume(&f.rt, &f.id).is_err(), "resumed a running container");
        assert!(pause(&f.rt, "lrun-no-such-container").is_err());
    }

    #[test]
    fn update_reaches_the_cgroup() {
        use oci_spec::runtime::{LinuxMemory, LinuxPidsBuilder, LinuxResources};
        let f = fake("update");
        let mut r = LinuxResources::default();
        r.set_pids(Some(LinuxPidsBuilder::default().limit(12).build().unwrap()));
        let mut m = LinuxMemory::default();
        m.set_limit(Some(96 << 20));
        r.set_memory(Some(m));
        super::super::update(&f.rt, &f.id, &r).unwrap();
        let s = f.m.stats().unwrap();
        assert_eq!(s.pids.limit, 12);
        assert_eq!(s.memory.usage.limit, 96 << 20);
        // Stopped containers cannot be updated.
        let mut f2 = fake("update-stopped");
        f2.child.kill().unwrap();
        f2.child.wait().unwrap();
        assert!(super::super::update(&f2.rt, &f2.id, &r).is_err());
    }
}
