//! ENOSYS for syscalls newer than the profile. A profile with a default errno lists the
//! syscalls it allows; a syscall added to the kernel after the profile was written would get
//! that errno (EPERM), and C libraries only fall back to older syscalls on ENOSYS (glibc tries
//! clone3, faccessat2, fchmodat2, ... first). So, as runc does, every syscall numbered above
//! all syscalls the profile names gets ENOSYS: a short BPF prologue in front of libseccomp's
//! program, one block per architecture.

use libseccomp::{ScmpArch, ScmpSyscall};
use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction};

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGT_K: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// Offsets in struct seccomp_data.
const NR: u32 = 0;
const ARCH: u32 = 4;

/// x32 syscalls come with AUDIT_ARCH_X86_64 and this bit in their number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The native architecture and `listed` (those libseccomp put in the filter), as libseccomp's
/// tokens, which are the kernel's AUDIT_ARCH values except for x32. x32 shares x86-64's value
/// and is left out: its numbers start at 512 | X32_SYSCALL_BIT, so "above the largest" cannot
/// tell new from old there; the MIPS n32 variants likewise.
fn archs(listed: &[Arch]) -> Vec<Arch> {
    let mut out = Vec::new();
    #[cfg(target_arch = "x86_64")]
    out.push(Arch::ScmpArchX86_64);
    #[cfg(target_arch = "aarch64")]
    out.push(Arch::ScmpArchAarch64);
    for a in listed {
        let skip = matches!(
            a,
            Arch::ScmpArchNative
                | Arch::ScmpArchX32
                | Arch::ScmpArchMips64n32
                | Arch::ScmpArchMipsel64n32
        );
        if !skip && !out.contains(a) {
            out.push(*a);
        }
    }
    out
}

/// The prologue for `s` over the architectures `archs` of its filter, or nothing when the
/// default action is not an errno other than ENOSYS.
pub(super) fn prologue(s: &LinuxSeccomp, archs_in_filter: &[Arch]) -> Vec<libc::sock_filter> {
    let errno = s.default_errno_ret().unwrap_or(libc::EPERM as u32);
    if s.default_action() != LinuxSeccompAction::ScmpActErrno || errno == libc::ENOSYS as u32 {
        return Vec::new();
    }
    let names: Vec<&String> = s
        .syscalls()
        .iter()
        .flatten()
        .flat_map(|sc| sc.names())
        .collect();
    let mut blocks: Vec<(u32, u32, bool)> = Vec::new();
    for arch in archs(archs_in_filter) {
        let scmp = super::profile::arch(arch);
        let max = names
            .iter()
            .filter_map(|n| ScmpSyscall::from_name_by_arch(n, scmp).ok())
            .map(i32::from)
            .filter(|nr| *nr >= 0)
            .max();
        // A profile naming no syscall of this architecture gives nothing to compare with.
        if let Some(max) = max {
            blocks.push((arch as u32, max as u32, scmp == ScmpArch::X8664));
        }
    }
    if blocks.is_empty() {
        return Vec::new();
    }
    let len: usize = 1 + blocks.iter().map(|b| 3 + usize::from(b.2)).sum::<usize>() + 2;
    // Jumps are relative to the next instruction. The prologue is a few dozen instructions at
    // most, so every offset fits the 8-bit jump fields.
    let enosys = len - 1;
    let main = len;
    let off = |from: usize, to: usize| (to - from - 1) as u8;
    let mut p = vec![insn(LD_W_ABS, 0, 0, ARCH)];
    for (audit, max, x86_64) in blocks {
        let block_len = 3 + usize::from(x86_64);
        let at = p.len();
        // Not this architecture: on to the next block, with the arch still loaded.
        p.push(insn(JEQ_K, 0, off(at, at + block_len), audit));
        p.push(insn(LD_W_ABS, 0, 0, NR));
        if x86_64 {
            let at = p.len();
            p.push(insn(JSET_K, off(at, main), 0, X32_SYSCALL_BIT));
        }
        let at = p.len();
        p.push(insn(JGT_K, off(at, enosys), off(at, main), max));
    }
    // No block matched: libseccomp's program decides (and kills foreign architectures).
    p.push(insn(JA, 0, 0, 1));
    p.push(insn(
        RET_K,
        0,
        0,
        libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
    ));
    debug_assert_eq!(p.len(), len);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> LinuxSeccomp {
        match serde_json::from_str(json) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn no_prologue_unless_the_default_is_an_errno() {
        let allow = parse(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO"}]}"#,
        );
        assert!(prologue(&allow, &[]).is_empty());
        let enosys = parse(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,"syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#,
        );
        assert!(prologue(&enosys, &[]).is_empty());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn prologue_compares_with_the_largest_named_syscall_per_arch() {
        let s = parse(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
                "syscalls":[{"names":["read","clone3","lrun_unknown"],"action":"SCMP_ACT_ALLOW"}]}"#,
        );
        let p = prologue(&s, s.architectures().as_deref().unwrap_or_default());
        // ld arch; x86_64: jeq, ld nr, jset, jgt; x86: jeq, ld nr, jgt; ja; ret
        assert_eq!(p.len(), 1 + 4 + 3 + 2);
        assert_eq!((p[1].code, p[1].k), (JEQ_K, 0xc000_003e));
        assert_eq!((p[4].code, p[4].k), (JGT_K, 435));
        assert_eq!((p[5].code, p[5].k), (JEQ_K, 0x4000_0003));
        assert_eq!((p[7].code, p[7].k), (JGT_K, 435));
        assert_eq!(p[9].k, libc::SECCOMP_RET_ERRNO | 38);
        // Every jump lands inside the prologue or on the first instruction after it.
        for (i, ins) in p.iter().enumerate() {
            if ins.code & 0x07 == libc::BPF_JMP as u16 {
                let far = if ins.code == JA {
                    ins.k as usize
                } else {
                    ins.jt.max(ins.jf) as usize
                };
                assert!(
                    i + 1 + far <= p.len(),
                    "jump at {i} goes past the program start"
                );
            }
        }
    }
}
