//! linux.seccomp: check the profile, compile it to a BPF program, load it.
//!
//! Compilation uses libseccomp (syscall name tables for every architecture, multi-arch
//! filters, argument comparisons, notify). It can run in the runtime before the container's
//! processes are forked ([`prepare`]); the init then only calls seccomp(2) ([`Filter::load`]).
//! Syscall names this libseccomp does not know are skipped, as runc does.

mod agent;
mod cache;
mod enosys;
mod features;
mod load;
mod profile;

pub use agent::{Agent, send_listener};
pub use features::features;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::path::Path;

use anyhow::{Context, Result, bail};
use libseccomp::{ScmpFilterContext, ScmpSyscall};
use nix::sys::memfd::{MFdFlags, memfd_create};
use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag};

/// The kernel refuses longer programs (BPF_MAXINSNS).
const MAX_INSTRUCTIONS: usize = 4096;

/// A compiled filter, ready to load.
#[derive(Debug, Clone)]
pub struct Filter {
    program: Vec<libc::sock_filter>,
    flags: libc::c_ulong,
}

impl Filter {
    /// Load the filter into the calling thread (and, with SECCOMP_FILTER_FLAG_TSYNC, its
    /// siblings). Returns the notify listener fd when the profile uses SCMP_ACT_NOTIFY.
    ///
    /// Does not allocate on success, so it is safe between fork and exec. Without
    /// no_new_privs the caller still needs CAP_SYS_ADMIN here.
    pub fn load(&self) -> Result<Option<OwnedFd>> {
        load::load(&self.program, self.flags)
    }

    /// Whether loading returns a listener fd to hand to linux.seccomp.listenerPath.
    pub fn has_listener(&self) -> bool {
        self.flags & libc::SECCOMP_FILTER_FLAG_NEW_LISTENER != 0
    }

    /// Number of BPF instructions.
    pub fn len(&self) -> usize {
        self.program.len()
    }

    pub fn is_empty(&self) -> bool {
        self.program.is_empty()
    }

    #[cfg(test)]
    fn program_words(&self) -> Vec<(u16, u8, u8, u32)> {
        self.program
            .iter()
            .map(|i| (i.code, i.jt, i.jf, i.k))
            .collect()
    }
}

/// Check the profile without compiling it: errno values, argument indexes, notify settings.
/// Errors are one line naming the field in config.json. Unknown actions, operators,
/// architectures and flags are refused earlier, when config.json is parsed.
pub fn validate(seccomp: &LinuxSeccomp) -> Result<()> {
    profile::check(seccomp)
}

/// Check and compile the profile. Compiling a three-architecture default profile costs
/// ~20 ms: prefer [`prepare_cached`] on the create path.
pub fn prepare(seccomp: &LinuxSeccomp) -> Result<Filter> {
    profile::check(seccomp)?;
    let program = decode(&compile(seccomp)?)?;
    Ok(Filter {
        program,
        flags: flags(seccomp, uses_notify(seccomp)),
    })
}

/// [`prepare`], keeping compiled programs in `cache_dir` (created 0700 if missing; lrun's
/// root directory is the place). A hit costs well under a millisecond. Failing to write the
/// cache is not an error: the filter is still returned.
pub fn prepare_cached(seccomp: &LinuxSeccomp, cache_dir: &Path) -> Result<Filter> {
    profile::check(seccomp)?;
    let flags = flags(seccomp, uses_notify(seccomp));
    let key = cache::key(seccomp)?;
    if let Some(program) = cache::lookup(cache_dir, &key).and_then(|b| decode(&b).ok()) {
        return Ok(Filter { program, flags });
    }
    let bytes = compile(seccomp)?;
    let program = decode(&bytes)?;
    if let Err(e) = cache::store(cache_dir, &key, &bytes) {
        crate::logging::debug(&format!("seccomp: filter not cached: {e:#}"));
    }
    Ok(Filter { program, flags })
}

/// Load the filter into the calling process. Returns the notify listener fd if the profile
/// uses SCMP_ACT_NOTIFY (the caller sends it to linux.seccomp.listenerPath).
pub fn install(seccomp: &LinuxSeccomp) -> Result<Option<OwnedFd>> {
    prepare(seccomp)?.load()
}

/// libseccomp's filter for `s`, and the architectures of `architectures` it contains.
fn build(s: &LinuxSeccomp) -> Result<(ScmpFilterContext, Vec<Arch>)> {
    let default = profile::action(
        s.default_action(),
        s.default_errno_ret(),
        "linux.seccomp.defaultErrnoRet",
    )?;
    let mut ctx = ScmpFilterContext::new(default)
        .with_context(|| format!("libseccomp: new filter with default action {default:?}"))?;
    let mut archs = Vec::new();
    for (i, arch) in s.architectures().iter().flatten().enumerate() {
        let a = profile::arch(*arch);
        // The native architecture is always in a new filter; adding it again is an error.
        if ctx.is_arch_present(a).unwrap_or(false) {
            archs.push(*arch);
            continue;
        }
        // libseccomp refuses architectures of the other endianness, and ones it was built
        // without. This kernel cannot run syscalls of either kind, so their rules could never
        // match: profiles list every architecture an engine supports, and that must not fail.
        match ctx.add_arch(a) {
            Ok(_) => archs.push(*arch),
            Err(e) => crate::logging::debug(&format!(
                "seccomp: linux.seccomp.architectures[{i}]: {arch} skipped on this host: {e}"
            )),
        }
    }
    // A binary tree of syscall numbers instead of a linear list: a default profile allows
    // ~300 syscalls, and every syscall the container makes walks this program.
    ctx.set_ctl_optimize(2)
        .context("libseccomp: set SCMP_FLTATR_CTL_OPTIMIZE")?;
    for (i, sc) in s.syscalls().iter().flatten().enumerate() {
        let field = format!("linux.seccomp.syscalls[{i}]");
        let action = profile::action(sc.action(), sc.errno_ret(), &format!("{field}.errnoRet"))?;
        // libseccomp refuses a rule whose action is the default one; it would change nothing.
        if action == default {
            continue;
        }
        let sets = profile::condition_sets(sc.args().as_ref());
        for name in sc.names() {
            let Ok(nr) = ScmpSyscall::from_name(name) else {
                crate::logging::debug(&format!(
                    "seccomp: {field}: syscall {name:?} is unknown to libseccomp here, skipped"
                ));
                continue;
            };
            for conds in &sets {
                ctx.add_rule_conditional(action, nr, conds)
                    .with_context(|| {
                        format!("field {field}: cannot add rule {action:?} for syscall {name}")
                    })?;
            }
        }
    }
    Ok((ctx, archs))
}

/// The BPF program for `s`: the ENOSYS prologue, then libseccomp's program (which starts by
/// loading the architecture itself, so it does not depend on what the prologue left loaded).
fn compile(s: &LinuxSeccomp) -> Result<Vec<u8>> {
    let (ctx, archs) = build(s)?;
    let mut bytes = encode(&enosys::prologue(s, &archs));
    bytes.extend(export(&ctx)?);
    Ok(bytes)
}

fn encode(program: &[libc::sock_filter]) -> Vec<u8> {
    let mut out = Vec::with_capacity(program.len() * 8);
    for i in program {
        out.extend_from_slice(&i.code.to_ne_bytes());
        out.push(i.jt);
        out.push(i.jf);
        out.extend_from_slice(&i.k.to_ne_bytes());
    }
    out
}

/// libseccomp 2.5 exports only to a file descriptor: a memfd keeps it off any filesystem.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<u8>> {
    let fd = memfd_create("lrun-seccomp", MFdFlags::MFD_CLOEXEC).context("memfd_create")?;
    ctx.export_bpf(&fd)
        .context("libseccomp: export the BPF program")?;
    let mut file = File::from(fd);
    file.seek(SeekFrom::Start(0))
        .context("seek the exported BPF program")?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .context("read the exported BPF program")?;
    Ok(bytes)
}

fn decode(bytes: &[u8]) -> Result<Vec<libc::sock_filter>> {
    const INSN: usize = std::mem::size_of::<libc::sock_filter>();
    if bytes.is_empty() || !bytes.len().is_multiple_of(INSN) {
        bail!(
            "libseccomp exported {} bytes, not a whole number of BPF instructions",
            bytes.len()
        );
    }
    let n = bytes.len() / INSN;
    if n > MAX_INSTRUCTIONS {
        bail!(
            "linux.seccomp compiles to {n} BPF instructions, more than the kernel's limit of \
             {MAX_INSTRUCTIONS}"
        );
    }
    Ok(bytes
        .chunks_exact(INSN)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

/// Whether a notify rule made it into the filter: rules whose names are all unknown here are
/// skipped, and then the kernel must not be asked for a listener nobody will get events from.
fn uses_notify(s: &LinuxSeccomp) -> bool {
    s.syscalls().iter().flatten().any(|sc| {
        sc.action() == LinuxSeccompAction::ScmpActNotify
            && sc.names().iter().any(|n| ScmpSyscall::from_name(n).is_ok())
    })
}

fn flags(s: &LinuxSeccomp, notify: bool) -> libc::c_ulong {
    let mut flags = 0;
    for flag in s.flags().iter().flatten() {
        flags |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
            }
        };
    }
    if notify {
        flags |= libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
        // TSYNC reports failures as a thread id, which the kernel cannot tell apart from a
        // listener fd: it then requires TSYNC_ESRCH.
        if flags & libc::SECCOMP_FILTER_FLAG_TSYNC != 0 {
            flags |= libc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
        }
    } else if flags & libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV != 0 {
        // The kernel refuses this flag without a listener; it has no meaning then.
        crate::logging::debug(
            "seccomp: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV ignored: no SCMP_ACT_NOTIFY rule",
        );
        flags &= !libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
    }
    flags
}

#[cfg(test)]
mod tests;
