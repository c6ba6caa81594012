//! The `seccomp` section of `lrun features` (runtime-spec features.md): what this build and
//! this kernel support.

use libseccomp::ScmpSyscall;
use oci_spec::runtime::Arch;
use serde_json::{Value, json};

const ARCHS: &[Arch] = &[
    Arch::ScmpArchX86,
    Arch::ScmpArchX86_64,
    Arch::ScmpArchX32,
    Arch::ScmpArchArm,
    Arch::ScmpArchAarch64,
    Arch::ScmpArchMips,
    Arch::ScmpArchMips64,
    Arch::ScmpArchMips64n32,
    Arch::ScmpArchMipsel,
    Arch::ScmpArchMipsel64,
    Arch::ScmpArchMipsel64n32,
    Arch::ScmpArchPpc,
    Arch::ScmpArchPpc64,
    Arch::ScmpArchPpc64le,
    Arch::ScmpArchS390,
    Arch::ScmpArchS390x,
    Arch::ScmpArchParisc,
    Arch::ScmpArchParisc64,
    Arch::ScmpArchRiscv64,
    Arch::ScmpArchLoongarch64,
    Arch::ScmpArchM68k,
    Arch::ScmpArchSh,
    Arch::ScmpArchSheb,
];

const FLAGS: &[(&str, libc::c_ulong)] = &[
    ("SECCOMP_FILTER_FLAG_TSYNC", libc::SECCOMP_FILTER_FLAG_TSYNC),
    ("SECCOMP_FILTER_FLAG_LOG", libc::SECCOMP_FILTER_FLAG_LOG),
    (
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
    ),
    (
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
        libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
    ),
];

/// The JSON object for features.linux.seccomp.
pub fn features() -> Value {
    let archs: Vec<String> = ARCHS
        .iter()
        .filter(|a| arch_supported(**a))
        .map(|a| a.to_string())
        .collect();
    let known: Vec<&str> = FLAGS.iter().map(|(n, _)| *n).collect();
    let supported: Vec<&str> = FLAGS
        .iter()
        .filter(|(_, f)| flag_supported(*f))
        .map(|(n, _)| *n)
        .collect();
    json!({
        "enabled": true,
        "actions": [
            "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
            "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE",
            "SCMP_ACT_TRAP"
        ],
        "operators": [
            "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
            "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"
        ],
        "archs": archs,
        "knownFlags": known,
        "supportedFlags": supported,
    })
}

/// Whether this libseccomp knows `arch`: it resolves syscall names only for architectures it
/// was built with.
fn arch_supported(arch: Arch) -> bool {
    ScmpSyscall::from_name_by_arch("read", super::profile::arch(arch)).is_ok()
}

/// The kernel checks the flags before it reads the program: with a NULL program a known flag
/// fails with EFAULT and an unknown one with EINVAL. Nothing is ever loaded.
fn flag_supported(flag: libc::c_ulong) -> bool {
    // WAIT_KILLABLE_RECV is only accepted together with NEW_LISTENER.
    let flags = if flag == libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV {
        flag | libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
    } else {
        flag
    };
    // SAFETY: a NULL program pointer; the kernel fails the call before loading anything.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            std::ptr::null::<libc::sock_fprog>(),
        )
    };
    rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_list_this_kernels_flags_and_native_arch() {
        let f = features();
        let supported = f["supportedFlags"].as_array().cloned().unwrap_or_default();
        // Kernel 5.19+ knows all four flags.
        assert_eq!(supported.len(), 4, "{f}");
        let archs = f["archs"].as_array().cloned().unwrap_or_default();
        assert!(archs.iter().any(|a| a == "SCMP_ARCH_X86_64"), "{f}");
        assert!(archs.iter().any(|a| a == "SCMP_ARCH_X32"), "{f}");
        // Known to libseccomp even though a filter here cannot include it.
        assert!(archs.iter().any(|a| a == "SCMP_ARCH_S390X"), "{f}");
        assert_eq!(f["enabled"], true);
    }

    #[test]
    fn an_unknown_flag_is_not_supported() {
        assert!(!flag_supported(1 << 30));
    }
}
