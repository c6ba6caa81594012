//! The `mounts` entries of config.json: option parsing and mounting one entry.

use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::{MsFlags, mount};
use oci_spec::runtime::Mount;

use super::resolve::{Kind, ensure_in_root, fd_path};

/// A mount entry's options split the way mount(2) wants them.
#[derive(Debug, PartialEq)]
pub struct Options {
    pub flags: MsFlags,
    /// Flags that were explicitly cleared (e.g. "rw", "suid"), for bind remounts.
    pub cleared: MsFlags,
    pub propagation: MsFlags,
    pub bind: bool,
    pub recursive: bool,
    /// Filesystem-specific options, comma-joined (e.g. "mode=755,size=65536k").
    pub data: String,
}

pub fn parse_options(opts: &[String]) -> Options {
    let mut o = Options {
        flags: MsFlags::empty(),
        cleared: MsFlags::empty(),
        propagation: MsFlags::empty(),
        bind: false,
        recursive: false,
        data: String::new(),
    };
    let mut data = Vec::new();
    for opt in opts {
        let (set, clear) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "bind" => {
                o.bind = true;
                continue;
            }
            "rbind" => {
                o.bind = true;
                o.recursive = true;
                continue;
            }
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                o.propagation |= propagation_flag(opt).unwrap_or(MsFlags::empty());
                continue;
            }
            // Hints for other runtimes that have no mount(2) meaning here.
            "tmpcopyup" | "defaults" | "nosymfollow" | "idmap" | "ridmap" => continue,
            _ => {
                data.push(opt.as_str());
                continue;
            }
        };
        o.flags = (o.flags | set) - clear;
        o.cleared = (o.cleared | clear) - set;
    }
    o.data = data.join(",");
    o
}

pub fn propagation_flag(name: &str) -> Option<MsFlags> {
    let f = match name {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    };
    Some(f)
}

/// Mount one config entry below `root` (an fd on the rootfs, before pivot_root).
pub fn mount_entry(
    root: BorrowedFd,
    bundle: &Path,
    m: &Mount,
    cgroup: Option<&CgroupMounter>,
) -> Result<()> {
    let dest = m.destination();
    let typ = m.typ().as_deref().unwrap_or("");
    let opts = parse_options(m.options().as_deref().unwrap_or_default());
    let bind = opts.bind || typ == "bind";
    let what = || format!("mount {} on {}", typ, dest.display());

    if typ == "cgroup" && !bind {
        let cgroup = cgroup.context("internal: cgroup mount without the host's cgroup layout")?;
        return cgroup.mount(root, dest, &opts).with_context(what);
    }
    let source = m.source().clone().map(|s| {
        if bind && s.is_relative() {
            bundle.join(s)
        } else {
            s
        }
    });
    let kind = match (&source, bind) {
        (Some(src), true) if !src.is_dir() => Kind::File,
        _ => Kind::Dir,
    };
    let target = ensure_in_root(root, dest, kind).with_context(what)?;
    let target_path = fd_path(&target);
    let data = (!opts.data.is_empty()).then_some(opts.data.as_str());

    if bind {
        let src = source
            .as_deref()
            .with_context(|| format!("{}: bind mount needs a source", what()))?;
        let mut flags = MsFlags::MS_BIND;
        if opts.recursive {
            flags |= MsFlags::MS_REC;
        }
        mount(
            Some(src),
            target_path.as_str(),
            None::<&str>,
            flags,
            None::<&str>,
        )
        .with_context(|| format!("{}: bind from {}", what(), src.display()))?;
        // A bind mount ignores other flags: apply them with a remount of the new mount point.
        if !opts.flags.is_empty() {
            let fresh = ensure_in_root(root, dest, kind).with_context(what)?;
            remount_bind(&fd_path(&fresh), opts.flags, opts.cleared).with_context(what)?;
        }
    } else {
        let src = source.as_deref().map(Path::new).unwrap_or(Path::new(typ));
        mount(Some(src), target_path.as_str(), Some(typ), opts.flags, data).with_context(what)?;
    }
    if !opts.propagation.is_empty() {
        let fresh = ensure_in_root(root, dest, kind).with_context(what)?;
        mount(
            None::<&str>,
            fd_path(&fresh).as_str(),
            None::<&str>,
            opts.propagation,
            None::<&str>,
        )
        .with_context(|| format!("{}: set propagation", what()))?;
    }
    Ok(())
}

/// Remount a bind mount with new flags, keeping the flags the kernel locks (in a user
/// namespace, nosuid/nodev/noexec/ro inherited from the source cannot be cleared).
pub fn remount_bind(path: &str, set: MsFlags, cleared: MsFlags) -> Result<()> {
    let current = statvfs_flags(path)?;
    let flags = ((current | set) - cleared) | MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    match mount(None::<&str>, path, None::<&str>, flags, None::<&str>) {
        Ok(()) => Ok(()),
        // Locked flags: retry keeping everything the source had.
        Err(nix::errno::Errno::EPERM) => mount(
            None::<&str>,
            path,
            None::<&str>,
            current | set | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
            None::<&str>,
        )
        .with_context(|| format!("remount {path}")),
        Err(e) => Err(e).with_context(|| format!("remount {path}")),
    }
}

fn statvfs_flags(path: &str) -> Result<MsFlags> {
    use nix::sys::statvfs::{FsFlags, statvfs};
    let st = statvfs(path).with_context(|| format!("statvfs {path}"))?;
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs) {
            out |= ms;
        }
    }
    Ok(out)
}

/// Mounts `type: cgroup` entries. With a cgroup namespace the kernel roots a fresh cgroup
/// mount at the container's own cgroup, so the filesystem is mounted (cgroup2 on a unified
/// host, one cgroup v1 mount per hierarchy on a tmpfs otherwise). Without one, a fresh mount
/// would show the whole host tree: the container's own cgroup directories are bind-mounted
/// instead, as runc does.
pub struct CgroupMounter {
    /// Per v1 hierarchy: directory name, super options, host mount point.
    v1: Vec<(String, String, PathBuf)>,
    unified: Option<PathBuf>,
    /// /proc/self/cgroup: (controllers, path) of the calling process (already in the
    /// container's cgroups when this is read).
    own: Vec<(String, String)>,
    cgroupns: bool,
}

impl CgroupMounter {
    /// Read the host's cgroup mounts and our cgroups (call before pivot_root). Mounts that a
    /// later mount covers are ignored (cgroup-sandbox.sh leaves such copies behind).
    pub fn from_host(cgroupns: bool) -> Self {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut v1 = Vec::new();
        let mut unified = None;
        for m in crate::cgroups::layout::parse_mountinfo(&text) {
            if m.v2 {
                if m.mount_point == Path::new("/sys/fs/cgroup") {
                    unified = Some(m.mount_point);
                }
            } else if let Some(name) = m
                .mount_point
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
            {
                v1.push((name, m.controllers.join(","), m.mount_point.clone()));
            }
        }
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
                Some((ctrls.to_string(), path.to_string()))
            })
            .collect();
        CgroupMounter {
            v1,
            unified,
            own,
            cgroupns,
        }
    }

    /// Our cgroup path in the hierarchy whose controllers are `options`.
    fn own_path(&self, options: &str) -> Option<&str> {
        let mut want: Vec<&str> = options
            .split(',')
            .filter(|o| !o.contains('=') || o.starts_with("name="))
            .collect();
        want.sort();
        self.own.iter().find_map(|(ctrls, path)| {
            let mut have: Vec<&str> = ctrls.split(',').collect();
            have.sort();
            (have == want).then_some(path.as_str())
        })
    }

    /// Mount one hierarchy at `dest` (inside the rootfs).
    fn mount_one(
        &self,
        root: BorrowedFd,
        dest: &Path,
        fstype: &str,
        options: Option<&str>,
        host: &Path,
        flags: MsFlags,
    ) -> Result<()> {
        let target = ensure_in_root(root, dest, Kind::Dir)?;
        if self.cgroupns {
            return mount(
                Some(fstype),
                fd_path(&target).as_str(),
                Some(fstype),
                flags,
                options,
            )
            .with_context(|| format!("mount {fstype} {}", options.unwrap_or("")));
        }
        let own = self.own_path(options.unwrap_or(""));
        let src = host.join(own.unwrap_or("/").trim_start_matches('/'));
        mount(
            Some(&src),
            fd_path(&target).as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("bind {}", src.display()))?;
        // The flags apply to the new mount: reopen the path to reach it, not what it covers.
        let mounted = ensure_in_root(root, dest, Kind::Dir)?;
        remount_bind(&fd_path(&mounted), flags, MsFlags::empty())
    }

    fn mount(&self, root: BorrowedFd, dest: &Path, opts: &Options) -> Result<()> {
        let target = ensure_in_root(root, dest, Kind::Dir)?;
        let flags = opts.flags | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        if let Some(host) = &self.unified {
            return self.mount_one(root, dest, "cgroup2", None, host, flags);
        }
        let tmpfs_flags = flags - MsFlags::MS_RDONLY;
        mount(
            Some("tmpfs"),
            fd_path(&target).as_str(),
            Some("tmpfs"),
            tmpfs_flags,
            Some("mode=755"),
        )
        .context("mount tmpfs for cgroups")?;
        for (name, options, host) in &self.v1 {
            self.mount_one(root, &dest.join(name), "cgroup", Some(options), host, flags)
                .with_context(|| format!("cgroup hierarchy {name}"))?;
        }
        if opts.flags.contains(MsFlags::MS_RDONLY) {
            let t = ensure_in_root(root, dest, Kind::Dir)?;
            remount_bind(&fd_path(&t), MsFlags::MS_RDONLY, MsFlags::empty())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let o = parse_options(&strs(&["nosuid", "strictatime", "mode=755", "size=65536k"]));
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(o.data, "mode=755,size=65536k");
        assert!(!o.bind);
    }

    #[test]
    fn later_options_win() {
        let o = parse_options(&strs(&["ro", "rw", "rbind", "rslave"]));
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
        assert!(o.cleared.contains(MsFlags::MS_RDONLY));
        assert!(o.bind && o.recursive);
        assert_eq!(o.propagation, MsFlags::MS_SLAVE | MsFlags::MS_REC);
    }
}
