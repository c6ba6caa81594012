//! `lrun pause ID` and `lrun resume ID`.

use anyhow::{Context, bail};

use super::Globals;
use crate::cgroups;
use crate::state::{self, ContainerState, DirLock, StateRoot, Status};

#[derive(clap::Args, Debug)]
pub struct Args {
    pub id: String,
}

pub fn pause(g: &Globals, a: Args) -> anyhow::Result<i32> {
    let (_lock, dir, st) = load_locked(g, &a.id)?;
    let status = st.status(&dir, cgroups::is_frozen);
    if status != Status::Running {
        bail!(
            "container {:?} is {status}, not running: cannot pause",
            a.id
        );
    }
    cgroups::open_driver(&st.cgroups)
        .and_then(|d| d.freeze())
        .with_context(|| format!("pause container {:?}", a.id))?;
    Ok(0)
}

pub fn resume(g: &Globals, a: Args) -> anyhow::Result<i32> {
    let (_lock, dir, st) = load_locked(g, &a.id)?;
    let status = st.status(&dir, cgroups::is_frozen);
    if status != Status::Paused {
        bail!(
            "container {:?} is {status}, not paused: cannot resume",
            a.id
        );
    }
    cgroups::open_driver(&st.cgroups)
        .and_then(|d| d.thaw())
        .with_context(|| format!("resume container {:?}", a.id))?;
    Ok(0)
}

/// Load a container's state under its lock, so a concurrent delete cannot pull the cgroups
/// away between the status check and the change.
pub(super) fn load_locked(
    g: &Globals,
    id: &str,
) -> anyhow::Result<(DirLock, std::path::PathBuf, ContainerState)> {
    let root = StateRoot::new(&g.root);
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

    use clap::Parser;

    use super::*;
    use crate::cgroups::CgroupDriver;

    /// A fake running container: a `sleep` in its own cgroups and a state.json written here,
    /// released on drop whatever the test did.
    struct Fake {
        id: String,
        g: Globals,
        child: Child,
        m: Box<dyn CgroupDriver>,
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = self.m.destroy();
            let _ = std::fs::remove_dir_all(&self.g.root);
        }
    }

    fn fake(name: &str) -> Fake {
        let id = format!("lrun-cli-{}-{name}", std::process::id());
        let m = cgroups::new_driver(None, &id).unwrap();
        m.create().unwrap();
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let root: PathBuf = std::env::temp_dir().join(format!("{id}-root"));
        let g = Globals {
            root: root.clone(),
            store: root.join("store"),
            debug: false,
        };
        let fake = Fake { id, g, child, m };
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
        let (dir, st) = StateRoot::new(&f.g.root).load(&f.id).unwrap();
        st.status(&dir, cgroups::is_frozen)
    }

    fn args(f: &Fake) -> Args {
        Args { id: f.id.clone() }
    }

    #[test]
    fn pause_and_resume_follow_the_status() {
        let f = fake("pause");
        assert_eq!(status(&f), Status::Running);
        assert_eq!(pause(&f.g, args(&f)).unwrap(), 0);
        assert_eq!(status(&f), Status::Paused);
        assert!(pause(&f.g, args(&f)).is_err(), "paused twice");
        assert_eq!(resume(&f.g, args(&f)).unwrap(), 0);
        assert_eq!(status(&f), Status::Running);
        assert!(
            resume(&f.g, args(&f)).is_err(),
            "resumed a running container"
        );
        let missing = Args {
            id: "lrun-no-such-container".into(),
        };
        assert!(pause(&f.g, missing).is_err());
    }

    #[test]
    fn update_flags_reach_the_cgroup() {
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: super::super::update::Args,
        }
        let f = fake("update");
        let t = T::try_parse_from(["t", &f.id, "--pids-limit", "12", "--memory", "96m"]).unwrap();
        assert_eq!(super::super::update::run(&f.g, t.a).unwrap(), 0);
        let s = f.m.stats().unwrap();
        assert_eq!(s.pids.limit, 12);
        assert_eq!(s.memory.usage.limit, 96 << 20);
        // Stopped containers cannot be updated.
        let f2 = fake("update-stopped");
        let mut f2 = f2;
        f2.child.kill().unwrap();
        f2.child.wait().unwrap();
        let t = T::try_parse_from(["t", &f2.id, "--pids-limit", "5"]).unwrap();
        assert!(super::super::update::run(&f2.g, t.a).is_err());
    }
}
