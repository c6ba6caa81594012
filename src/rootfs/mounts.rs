//! The `mounts` entries of config.json: option parsing and mounting one entry. Every mount
//! is built detached, given its flags, then attached onto a target held open (see fdmount).

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::mount::MsFlags;
use oci_spec::runtime::{Mount, Spec};

use super::fdmount::{self, Attrs};
use super::resolve::{Kind, clean, ensure_in_root};

/// A mount entry's options, split into what each step of the mount needs.
#[derive(Debug, PartialEq, Default)]
pub struct Options {
    /// Attributes of the mount itself (ro, nosuid, noatime, ...).
    pub attrs: Attrs,
    /// The r* options (rro, rnosuid, ...): the mount and every submount.
    pub rec_attrs: Attrs,
    /// Superblock flags of a new filesystem ("ro", "sync", ...), as mount(2) sets them.
    pub sb: Vec<&'static str>,
    pub propagation: Option<MsFlags>,
    pub bind: bool,
    pub recursive: bool,
    pub remount: bool,
    /// Copy the directory's content into the new tmpfs (crun's and runc's extension).
    pub tmpcopyup: bool,
    /// Filesystem-specific options (e.g. "mode=755"), for the kernel to judge.
    pub data: Vec<String>,
}

impl Options {
    /// Mount attributes of the first mount of a new filesystem (which has no submounts).
    pub fn new_fs_attrs(&self) -> Attrs {
        self.attrs.union(self.rec_attrs)
    }
}

/// A per-mount attribute option: (attributes to set, attributes to clear).
fn attr_option(name: &str) -> Option<(u64, u64)> {
    use fdmount::*;
    let atime = |mode| (mode, ATTR_ATIME_MASK);
    Some(match name {
        "ro" => (ATTR_RDONLY, 0),
        "rw" => (0, ATTR_RDONLY),
        "nosuid" => (ATTR_NOSUID, 0),
        "suid" => (0, ATTR_NOSUID),
        "nodev" => (ATTR_NODEV, 0),
        "dev" => (0, ATTR_NODEV),
        "noexec" => (ATTR_NOEXEC, 0),
        "exec" => (0, ATTR_NOEXEC),
        "noatime" => atime(ATTR_NOATIME),
        "strictatime" => atime(ATTR_STRICTATIME),
        // Without noatime or strictatime the kernel uses relatime.
        "relatime" | "atime" | "norelatime" | "nostrictatime" => atime(ATTR_RELATIME),
        "nodiratime" => (ATTR_NODIRATIME, 0),
        "diratime" => (0, ATTR_NODIRATIME),
        "nosymfollow" => (ATTR_NOSYMFOLLOW, 0),
        "symfollow" => (0, ATTR_NOSYMFOLLOW),
        _ => return None,
    })
}

/// Superblock options mount(2) takes as flags: (the fsconfig flag, true to set it).
fn sb_option(name: &str) -> Option<(&'static str, bool)> {
    Some(match name {
        "sync" => ("sync", true),
        "async" => ("sync", false),
        "dirsync" => ("dirsync", true),
        "mand" => ("mand", true),
        "nomand" => ("mand", false),
        "lazytime" => ("lazytime", true),
        "nolazytime" => ("lazytime", false),
        _ => return None,
    })
}

/// Split a mount entry's options. `typ` is the filesystem type ("bind" or "none" for binds):
/// a bind mount has no filesystem to pass unknown options to, so they are refused by name
/// rather than silently dropped.
pub fn parse_options(typ: &str, opts: &[String]) -> Result<Options> {
    let mut o = Options::default();
    let mut unknown = Vec::new();
    for opt in opts {
        let name = opt.as_str();
        if let Some((set, clear)) = attr_option(name) {
            o.attrs.apply(set, clear);
            // mount(2) makes the superblock read-only too when a new filesystem is mounted ro.
            o.sb.retain(|f| *f != "ro");
            if name == "ro" {
                o.sb.push("ro");
            }
            continue;
        }
        if let Some((set, clear)) = name.strip_prefix('r').and_then(attr_option) {
            o.rec_attrs.apply(set, clear);
            continue;
        }
        if let Some((flag, on)) = sb_option(name) {
            o.sb.retain(|f| *f != flag);
            if on {
                o.sb.push(flag);
            }
            continue;
        }
        if let Some(p) = propagation_flag(name) {
            o.propagation = Some(p);
            continue;
        }
        match name {
            "bind" => o.bind = true,
            "rbind" => {
                o.bind = true;
                o.recursive = true;
            }
            "remount" => o.remount = true,
            "tmpcopyup" => o.tmpcopyup = true,
            // mount(2) flags with nothing to apply here: logging, and i_version (always on
            // where a filesystem supports it). runc accepts them too.
            "defaults" | "silent" | "loud" | "iversion" | "noiversion" => {}
            _ => unknown.push(opt.clone()),
        }
    }
    let bind = o.bind || typ == "bind";
    if bind {
        if let Some(u) = unknown.first() {
            bail!("unknown option {u:?} for a bind mount");
        }
        if o.tmpcopyup {
            bail!("option \"tmpcopyup\" applies to tmpfs mounts only");
        }
    } else if o.tmpcopyup && typ != "tmpfs" {
        bail!("option \"tmpcopyup\" applies to tmpfs mounts only");
    }
    o.data = unknown;
    Ok(o)
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

/// Whether a config entry is a bind mount.
pub fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

/// Check a config entry's options at create time (one line naming the option).
pub fn check_options(m: &Mount) -> Result<()> {
    let typ = if is_bind(m) {
        "bind"
    } else {
        m.typ().as_deref().unwrap_or("")
    };
    parse_options(typ, m.options().as_deref().unwrap_or_default())
        .map(drop)
        .with_context(|| format!("mount on {}", m.destination().display()))
}

/// Mount one config entry below `root` (an fd on the rootfs, before pivot_root).
/// The bind sources of `mounts`, opened by `create` before the container's user namespace
/// exists (runc does the same): as that namespace's root the init cannot traverse a host
/// directory only the host's root may (mode 0700), `create` can. One detached copy per bind
/// mount (None for other entries), in the same order; the init inherits the fds.
pub fn open_bind_sources(spec: &Spec, bundle: &Path) -> Result<Vec<Option<OwnedFd>>> {
    let mut out = Vec::new();
    for m in spec.mounts().iter().flatten() {
        if !is_bind(m) {
            out.push(None);
            continue;
        }
        let what = || format!("mount bind on {}", clean(m.destination()).display());
        let opts =
            parse_options("bind", m.options().as_deref().unwrap_or_default()).with_context(what)?;
        let src = m
            .source()
            .as_deref()
            .with_context(|| format!("{}: bind mount needs a source", what()))?;
        let src = if src.is_relative() {
            bundle.join(src)
        } else {
            src.to_path_buf()
        };
        let tree = fdmount::clone_path(&src, opts.recursive)
            .with_context(|| format!("{}: bind from {}", what(), src.display()))?;
        out.push(Some(tree));
    }
    Ok(out)
}

pub fn mount_entry(
    root: BorrowedFd,
    bundle: &Path,
    m: &Mount,
    cgroup: Option<&CgroupMounter>,
    mount_label: Option<&str>,
    opened_source: Option<BorrowedFd>,
) -> Result<()> {
    let dest = clean(m.destination());
    let typ = m.typ().as_deref().unwrap_or("");
    let bind = is_bind(m);
    let what = || format!("mount {} on {}", typ, dest.display());
    let mut opts = parse_options(
        if bind { "bind" } else { typ },
        m.options().as_deref().unwrap_or_default(),
    )
    .with_context(what)?;
    if !bind {
        let context = crate::lsm::mount_context(mount_label, typ, &opts.data);
        opts.data.extend(context);
    }
    // As runc's mountPropagate: a tmpfs, and /dev, are mounted writable first (devices, /dev/pts
    // and copy-ups go in), then made read-only: a tmpfs just below, /dev by `finalize`.
    let ro_later = !bind
        && !opts.remount
        && (typ == "tmpfs" || dest == Path::new("/dev"))
        && is_readonly_new_fs(&opts);
    if ro_later {
        opts.attrs.set &= !fdmount::ATTR_RDONLY;
        opts.rec_attrs.set &= !fdmount::ATTR_RDONLY;
        opts.sb.retain(|f| *f != "ro");
    }

    if typ == "cgroup" && !bind {
        let cgroup = cgroup.context("internal: cgroup mount without the host's cgroup layout")?;
        return cgroup.mount(root, &dest, &opts).with_context(what);
    }
    let source = m.source().clone().map(|s| {
        if bind && s.is_relative() {
            bundle.join(s)
        } else {
            s
        }
    });

    if opts.remount && !bind {
        // Only the mount's attributes change; the target must be a mount already.
        let target = ensure_in_root(root, &dest, Kind::Dir).with_context(what)?;
        fdmount::set_attrs(target.as_fd(), opts.new_fs_attrs(), false).with_context(what)?;
        return Ok(());
    }

    // Build the new mount detached, with its flags, before the target is even looked up.
    let (tree, kind) = if bind {
        let src = source
            .as_deref()
            .with_context(|| format!("{}: bind mount needs a source", what()))?;
        let tree = match opened_source {
            Some(fd) => fd.try_clone_to_owned().context("dup a bind source"),
            None => fdmount::clone_path(src, opts.recursive),
        }
        .with_context(|| format!("{}: bind from {}", what(), src.display()))?;
        fdmount::set_attrs(tree.as_fd(), opts.attrs, false).with_context(what)?;
        fdmount::set_attrs(tree.as_fd(), opts.rec_attrs, true).with_context(what)?;
        let is_dir = rustix::fs::fstat(&tree).is_ok_and(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory
        });
        (tree, if is_dir { Kind::Dir } else { Kind::File })
    } else {
        let src = source
            .as_deref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|| typ.to_string());
        let tree = fdmount::new_fs(typ, &src, &opts.data, &opts.sb, opts.new_fs_attrs())
            .with_context(what)?;
        (tree, Kind::Dir)
    };
    let target = ensure_in_root(root, &dest, kind).with_context(what)?;
    check_not_into_proc(&target, &dest, typ, bind.then_some(&tree)).with_context(what)?;
    if opts.tmpcopyup {
        super::copyup::copy_dir_into(target.as_fd(), tree.as_fd())
            .with_context(|| format!("{}: tmpcopyup", what()))?;
    }
    fdmount::attach(tree.as_fd(), target.as_fd()).with_context(what)?;
    if let Some(p) = opts.propagation {
        // The tree fd now refers to the attached mount: no second lookup.
        fdmount::set_propagation(tree.as_fd(), p).with_context(what)?;
    }
    if ro_later && dest != Path::new("/dev") {
        make_readonly_fd(tree.as_fd()).with_context(what)?;
    }
    Ok(())
}

fn is_readonly_new_fs(opts: &Options) -> bool {
    opts.new_fs_attrs().set & fdmount::ATTR_RDONLY != 0
}

/// Whether `m` is a /dev mount made writable by `mount_entry` that `finalize` makes read-only.
pub fn is_readonly_dev(m: &Mount) -> bool {
    let typ = m.typ().as_deref().unwrap_or("");
    clean(m.destination()) == Path::new("/dev")
        && !is_bind(m)
        && parse_options(typ, m.options().as_deref().unwrap_or_default())
            .is_ok_and(|o| !o.remount && is_readonly_new_fs(&o))
}

/// Make the mount at `fd` (a mount's root) read-only.
pub fn make_mount_readonly(fd: BorrowedFd) -> Result<()> {
    make_readonly_fd(fd)
}

/// Entries of /proc that lxcfs emulates: runc allows mounts on exactly these.
const PROC_OVERRIDES: [&str; 10] = [
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
];

/// A mount whose destination resolves into a procfs (through a symlink in the image, say
/// `/vol/x -> /proc`) could cover the container's /proc, or a file of it, with something
/// that is not procfs and undo maskedPaths (CVE-2019-19921, CVE-2023-27561). As runc: only
/// proc itself, a bind of a procfs, or the lxcfs entries may go there.
fn check_not_into_proc(
    target: &OwnedFd,
    dest: &Path,
    typ: &str,
    bind_tree: Option<&OwnedFd>,
) -> Result<()> {
    let is_proc = |fd: &OwnedFd| {
        nix::sys::statfs::fstatfs(fd)
            .is_ok_and(|st| st.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC)
    };
    if !is_proc(target) || PROC_OVERRIDES.iter().any(|p| Path::new(p) == dest) {
        return Ok(());
    }
    match bind_tree {
        None if typ == "proc" => Ok(()),
        Some(tree) if is_proc(tree) => Ok(()),
        _ => bail!(
            "destination {} resolves into procfs: only proc may be mounted there",
            dest.display()
        ),
    }
}

/// Bind-mount a host path (a device node, the notify directory) onto `target` in the rootfs.
pub fn bind_host_path(src: &Path, target: BorrowedFd) -> Result<()> {
    let tree = fdmount::clone_path(src, false)?;
    fdmount::attach(tree.as_fd(), target)
}

/// Make the mount whose root `dir` is read-only (root.readonly), keeping locked flags.
pub fn make_readonly(dir: &File) -> Result<()> {
    make_readonly_fd(dir.as_fd())
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
    /// later mount covers are ignored (cgroup-sandbox.sh leaves such copies behind). An
    /// unreadable /proc file is an error: read as "no cgroup mounts" it would silently give
    /// the container none.
    pub fn from_host(cgroupns: bool) -> Result<Self> {
        let text = crate::mountinfo::read_self()?;
        let mut v1 = Vec::new();
        let mut unified = None;
        for m in crate::mountinfo::cgroup_mounts(&text) {
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
            .context("read /proc/self/cgroup")?
            .lines()
            .filter_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
                Some((ctrls.to_string(), path.to_string()))
            })
            .collect();
        Ok(CgroupMounter {
            v1,
            unified,
            own,
            cgroupns,
        })
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
        opts: &Options,
    ) -> Result<()> {
        let attrs = cgroup_attrs(opts);
        let tree = if self.cgroupns {
            let data: Vec<String> = options
                .into_iter()
                .flat_map(|o| o.split(','))
                .filter(|o| !o.is_empty())
                .map(str::to_string)
                .collect();
            fdmount::new_fs(fstype, fstype, &data, &opts.sb, attrs)
                .with_context(|| format!("mount {fstype} {}", options.unwrap_or("")))?
        } else {
            let own = self.own_path(options.unwrap_or(""));
            let src = host.join(own.unwrap_or("/").trim_start_matches('/'));
            let tree = fdmount::clone_path(&src, false)
                .with_context(|| format!("bind {}", src.display()))?;
            fdmount::set_attrs(tree.as_fd(), attrs, false)?;
            tree
        };
        let target = ensure_in_root(root, dest, Kind::Dir)?;
        fdmount::attach(tree.as_fd(), target.as_fd())
    }

    fn mount(&self, root: BorrowedFd, dest: &Path, opts: &Options) -> Result<()> {
        if let Some(host) = &self.unified {
            return self.mount_one(root, dest, "cgroup2", None, host, opts);
        }
        // The tmpfs that holds one directory per hierarchy is made read-only last.
        let mut tmpfs_attrs = cgroup_attrs(opts);
        tmpfs_attrs.set &= !fdmount::ATTR_RDONLY;
        let sb: Vec<&str> = opts.sb.iter().copied().filter(|f| *f != "ro").collect();
        let tmpfs = fdmount::new_fs(
            "tmpfs",
            "tmpfs",
            &["mode=755".to_string()],
            &sb,
            tmpfs_attrs,
        )
        .context("mount tmpfs for cgroups")?;
        let target = ensure_in_root(root, dest, Kind::Dir)?;
        fdmount::attach(tmpfs.as_fd(), target.as_fd()).context("mount tmpfs for cgroups")?;
        for (name, options, host) in &self.v1 {
            self.mount_one(root, &dest.join(name), "cgroup", Some(options), host, opts)
                .with_context(|| format!("cgroup hierarchy {name}"))?;
        }
        if opts.new_fs_attrs().set & fdmount::ATTR_RDONLY != 0 {
            make_readonly_fd(tmpfs.as_fd())?;
        }
        Ok(())
    }
}

/// cgroup mounts are always nosuid, nodev and noexec.
fn cgroup_attrs(opts: &Options) -> Attrs {
    let mut a = opts.new_fs_attrs();
    a.apply(
        fdmount::ATTR_NOSUID | fdmount::ATTR_NODEV | fdmount::ATTR_NOEXEC,
        0,
    );
    a
}

fn make_readonly_fd(fd: BorrowedFd) -> Result<()> {
    fdmount::set_attrs(
        fd,
        Attrs {
            set: fdmount::ATTR_RDONLY,
            clear: 0,
        },
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let o = parse_options(
            "tmpfs",
            &strs(&["nosuid", "strictatime", "mode=755", "size=65536k"]),
        )
        .unwrap();
        assert_eq!(
            o.attrs.set,
            fdmount::ATTR_NOSUID | fdmount::ATTR_STRICTATIME
        );
        assert_eq!(o.attrs.clear, fdmount::ATTR_ATIME_MASK);
        assert_eq!(o.data, strs(&["mode=755", "size=65536k"]));
        assert!(!o.bind);
    }

    #[test]
    fn later_options_win() {
        let o = parse_options("none", &strs(&["ro", "rw", "rbind", "rslave"])).unwrap();
        assert_eq!(o.attrs.set & fdmount::ATTR_RDONLY, 0);
        assert_ne!(o.attrs.clear & fdmount::ATTR_RDONLY, 0);
        assert!(o.sb.is_empty(), "rw takes the superblock's ro back");
        assert!(o.bind && o.recursive);
        assert_eq!(o.propagation, Some(MsFlags::MS_SLAVE | MsFlags::MS_REC));
    }

    #[test]
    fn recursive_options_are_kept_apart() {
        let o = parse_options(
            "bind",
            &strs(&["rbind", "rro", "rnosuid", "nodev", "rnosymfollow"]),
        )
        .unwrap();
        assert_eq!(
            o.rec_attrs.set,
            fdmount::ATTR_RDONLY | fdmount::ATTR_NOSUID | fdmount::ATTR_NOSYMFOLLOW
        );
        assert_eq!(o.attrs.set, fdmount::ATTR_NODEV);
        let o = parse_options("bind", &strs(&["rbind", "rro", "rrw"])).unwrap();
        assert_eq!(o.rec_attrs.set, 0);
        assert_eq!(o.rec_attrs.clear, fdmount::ATTR_RDONLY);
    }

    #[test]
    fn unknown_options_are_refused_on_binds_only() {
        let e = parse_options("bind", &strs(&["rbind", "rro", "bogus"])).unwrap_err();
        assert_eq!(e.to_string(), "unknown option \"bogus\" for a bind mount");
        assert!(parse_options("none", &strs(&["bind", "size=1"])).is_err());
        assert!(parse_options("tmpfs", &strs(&["size=1", "bogus"])).is_ok());
        let o = parse_options(
            "bind",
            &strs(&["bind", "defaults", "silent", "lazytime", "async"]),
        );
        assert_eq!(o.unwrap().sb, ["lazytime"]);
        assert!(parse_options("proc", &strs(&["tmpcopyup"])).is_err());
        assert!(
            parse_options("tmpfs", &strs(&["tmpcopyup"]))
                .unwrap()
                .tmpcopyup
        );
    }
}
