//! cgroup v2 has no devices files: access is decided by a BPF_PROG_TYPE_CGROUP_DEVICE program
//! attached to the cgroup. lrun assembles that program from the rule list by hand.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::devices::{self, Kind, Rule};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

// bpf_cgroup_dev_ctx: u32 access_type (access << 16 | type), u32 major, u32 minor.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    /// dst in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

// Opcodes used (class | op | source).
const LDX_MEM_W: u8 = 0x61;
const ALU32_AND_K: u8 = 0x54;
const ALU32_RSH_K: u8 = 0x74;
const ALU64_MOV_X: u8 = 0xbf;
const ALU64_MOV_K: u8 = 0xb7;
const JMP_JNE_K: u8 = 0x55;
const JMP_JEQ_K: u8 = 0x15;
const JMP_EXIT: u8 = 0x95;

/// Assemble the program: registers r2 = type, r3 = access, r4 = major, r5 = minor; rules are
/// tried last first and the first match returns its verdict (see `devices::decide`).
pub fn assemble(rules: &[Rule]) -> Vec<Insn> {
    let (default_allow, rules) = devices::reduce(rules);
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU32_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU32_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for r in rules.iter().rev() {
        // Jumps to "next rule" are patched once the block's length is known.
        let mut block: Vec<Insn> = Vec::new();
        match r.kind {
            Kind::All => {}
            Kind::Char => block.push(insn(JMP_JNE_K, 2, 0, 0, DEV_CHAR)),
            Kind::Block => block.push(insn(JMP_JNE_K, 2, 0, 0, DEV_BLOCK)),
        }
        if r.allow {
            let outside = i32::from(!r.access & devices::ACC_ALL);
            if outside != 0 {
                block.push(insn(ALU64_MOV_X, 1, 3, 0, 0));
                block.push(insn(ALU32_AND_K, 1, 0, 0, outside));
                block.push(insn(JMP_JNE_K, 1, 0, 0, 0));
            }
        } else if r.access != devices::ACC_ALL {
            block.push(insn(ALU64_MOV_X, 1, 3, 0, 0));
            block.push(insn(ALU32_AND_K, 1, 0, 0, i32::from(r.access)));
            block.push(insn(JMP_JEQ_K, 1, 0, 0, 0));
        }
        if let Some(m) = r.major {
            block.push(insn(JMP_JNE_K, 4, 0, 0, m as i32));
        }
        if let Some(m) = r.minor {
            block.push(insn(JMP_JNE_K, 5, 0, 0, m as i32));
        }
        block.push(insn(ALU64_MOV_K, 0, 0, 0, i32::from(r.allow)));
        block.push(insn(JMP_EXIT, 0, 0, 0, 0));
        let len = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.code == JMP_JNE_K || ins.code == JMP_JEQ_K {
                ins.off = (len - i - 1) as i16;
            }
        }
        p.extend(block);
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 0, i32::from(default_allow)));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: attr is a live, properly sized bpf_attr prefix; the kernel zero-extends it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn load(prog: &[Insn]) -> Result<OwnedFd> {
    let license = CString::new("Apache-2.0").context("license string")?;
    let mut name = [0u8; 16];
    name[..11].copy_from_slice(b"lrun_device");
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: the kernel returned a new file descriptor that nothing else owns.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            // Load again with the verifier's log, only on failure, to say why.
            let mut log = vec![0u8; 65536];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let _ = bpf(BPF_PROG_LOAD, &mut attr);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            bail!("bpf(BPF_PROG_LOAD) of the device program: {e}; verifier: {text}")
        }
    }
}

fn attached_ids(cgroup_fd: i32) -> Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut attr = QueryAttr {
        target_fd: cgroup_fd as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut attr).context("bpf(BPF_PROG_QUERY) of device programs")?;
    ids.truncate(attr.prog_cnt as usize);
    Ok(ids)
}

/// Attach the program for `rules` to the cgroup at `dir`, replacing any device program
/// attached to it before (an update must not leave the old rules in force alongside).
pub fn apply(dir: &Path, rules: &[Rule]) -> Result<()> {
    let prog = load(&assemble(rules))?;
    let cg = std::fs::File::open(dir).with_context(|| format!("open {}", dir.display()))?;
    let old = attached_ids(cg.as_raw_fd())
        .with_context(|| format!("query programs on {}", dir.display()))?;
    let mut attr = AttachAttr {
        target_fd: cg.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr)
        .with_context(|| format!("bpf(BPF_PROG_ATTACH) device program to {}", dir.display()))?;
    for id in old {
        let mut get = GetFdAttr {
            prog_id: id,
            ..Default::default()
        };
        let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut get)
            .with_context(|| format!("bpf(BPF_PROG_GET_FD_BY_ID {id})"))?;
        // SAFETY: a fresh descriptor from the kernel, owned here.
        let old_fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut det = AttachAttr {
            target_fd: cg.as_raw_fd() as u32,
            attach_bpf_fd: old_fd.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            ..Default::default()
        };
        bpf(BPF_PROG_DETACH, &mut det).with_context(|| {
            format!(
                "bpf(BPF_PROG_DETACH) old device program from {}",
                dir.display()
            )
        })?;
    }
    Ok(())
}

/// How many device programs are attached to the cgroup at `dir` (for tests and checks).
pub fn attached_count(dir: &Path) -> Result<usize> {
    let cg = std::fs::File::open(dir).with_context(|| format!("open {}", dir.display()))?;
    Ok(attached_ids(cg.as_raw_fd())?.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny interpreter for the opcodes `assemble` emits, so the program's logic is checked
    /// against `devices::decide` without the kernel (kernel tests check the real hook).
    fn run(prog: &[Insn], access_type: u32, major: u32, minor: u32) -> u64 {
        let ctx = [access_type, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => r[dst] = u64::from(ctx[i.off as usize / 4]),
                ALU32_AND_K => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                ALU32_RSH_K => r[dst] = (r[dst] as u32 >> i.imm) as u64,
                ALU64_MOV_X => r[dst] = r[src],
                ALU64_MOV_K => r[dst] = i.imm as i64 as u64,
                JMP_JNE_K if r[dst] != i.imm as i64 as u64 => pc += i.off as usize,
                JMP_JEQ_K if r[dst] == i.imm as i64 as u64 => pc += i.off as usize,
                JMP_JNE_K | JMP_JEQ_K => {}
                JMP_EXIT => return r[0],
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn program_agrees_with_reference_semantics() {
        use super::devices::*;
        let mut rules = effective_rules(&[], &[]).unwrap();
        rules.push(Rule {
            allow: false,
            kind: Kind::Char,
            major: Some(1),
            minor: Some(9),
            access: ACC_WRITE,
        });
        rules.push(Rule {
            allow: true,
            kind: Kind::Block,
            major: Some(7),
            minor: None,
            access: ACC_READ,
        });
        let prog = assemble(&rules);
        let (def, reduced) = reduce(&rules);
        for kind in [Kind::Char, Kind::Block] {
            for (major, minor) in [(1, 3), (1, 9), (5, 2), (7, 0), (8, 0), (136, 4), (10, 200)] {
                for access in 1..=7u8 {
                    let t = if kind == Kind::Char {
                        DEV_CHAR
                    } else {
                        DEV_BLOCK
                    } as u32;
                    let got = run(&prog, (u32::from(access) << 16) | t, major, minor) == 1;
                    let want = decide(def, &reduced, kind, major, minor, access);
                    assert_eq!(got, want, "{kind:?} {major}:{minor} access {access}");
                }
            }
        }
    }
}
