//! The checks on linux.seccomp that need no kernel and no libseccomp, and the translation of
//! its strings into libseccomp's values. Unknown action, operator, architecture and flag names
//! are already refused when config.json is parsed (oci-spec's enums); what is left are the rules
//! between fields.

use anyhow::{Result, bail};
use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompOperator, LinuxSyscall,
};

/// The kernel clamps larger SECCOMP_RET_ERRNO values to this, so a profile asking for more
/// would silently get another errno.
const MAX_ERRNO: u32 = 4095;

/// seccomp_data carries six syscall arguments.
const MAX_ARG_INDEX: usize = 5;

/// Syscalls lrun's init may make after loading the filter and before the seccomp agent holds
/// the listener fd: a SCMP_ACT_NOTIFY rule on one of them would block the init forever.
pub(super) const NOTIFY_FORBIDDEN: &[&str] = &["close", "connect", "sendmsg", "socket", "write"];

/// Check what oci-spec's types cannot: errno values, argument indexes, notify settings.
/// Errors name the field as a path in config.json.
pub(super) fn check(s: &LinuxSeccomp) -> Result<()> {
    action(
        s.default_action(),
        s.default_errno_ret(),
        "linux.seccomp.defaultErrnoRet",
    )?;
    if s.default_action() == LinuxSeccompAction::ScmpActNotify {
        bail!(
            "field linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be the default action \
             (the container's init would wait on an agent that does not have the listener yet)"
        );
    }
    if s.listener_metadata().is_some() && s.listener_path().is_none() {
        bail!("field linux.seccomp.listenerMetadata: set without linux.seccomp.listenerPath");
    }
    for (i, sc) in s.syscalls().iter().flatten().enumerate() {
        check_syscall(s, i, sc)?;
    }
    Ok(())
}

fn check_syscall(s: &LinuxSeccomp, i: usize, sc: &LinuxSyscall) -> Result<()> {
    if sc.names().is_empty() {
        bail!("field linux.seccomp.syscalls[{i}].names: must name at least one syscall");
    }
    if let Some(name) = sc.names().iter().find(|n| n.is_empty()) {
        bail!("field linux.seccomp.syscalls[{i}].names: empty name {name:?}");
    }
    action(
        sc.action(),
        sc.errno_ret(),
        &format!("linux.seccomp.syscalls[{i}].errnoRet"),
    )?;
    if sc.action() == LinuxSeccompAction::ScmpActNotify {
        if s.listener_path().is_none() {
            bail!(
                "field linux.seccomp.listenerPath: required because syscalls[{i}] uses \
                 SCMP_ACT_NOTIFY"
            );
        }
        if let Some(name) = sc
            .names()
            .iter()
            .find(|n| NOTIFY_FORBIDDEN.contains(&n.as_str()))
        {
            bail!(
                "field linux.seccomp.syscalls[{i}].names: SCMP_ACT_NOTIFY on {name} is not \
                 supported (lrun's init calls it before the agent has the listener)"
            );
        }
    }
    for (j, arg) in sc.args().iter().flatten().enumerate() {
        if arg.index() > MAX_ARG_INDEX {
            bail!(
                "field linux.seccomp.syscalls[{i}].args[{j}].index: {} is out of range 0..=5",
                arg.index()
            );
        }
    }
    Ok(())
}

/// The libseccomp action for an OCI action and its errnoRet. `field` names errnoRet in errors.
pub(super) fn action(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    field: &str,
) -> Result<ScmpAction> {
    use LinuxSeccompAction as A;
    Ok(match action {
        A::ScmpActErrno => {
            let errno = errno_ret.unwrap_or(libc::EPERM as u32);
            if errno > MAX_ERRNO {
                bail!("field {field}: {errno} is above the largest errno ({MAX_ERRNO})");
            }
            ScmpAction::Errno(errno as i32)
        }
        A::ScmpActTrace => {
            // runc and crun hand EPERM to the tracer when no value is given; keep the same.
            let value = errno_ret.unwrap_or(libc::EPERM as u32);
            let Ok(value) = u16::try_from(value) else {
                bail!("field {field}: {value} does not fit SCMP_ACT_TRACE's 16-bit value");
            };
            ScmpAction::Trace(value)
        }
        _ if errno_ret.is_some() => {
            bail!("field {field}: only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not {action}")
        }
        A::ScmpActAllow => ScmpAction::Allow,
        // The spec keeps SCMP_ACT_KILL for compatibility: libseccomp defines it as KILL_THREAD.
        A::ScmpActKill | A::ScmpActKillThread => ScmpAction::KillThread,
        A::ScmpActKillProcess => ScmpAction::KillProcess,
        A::ScmpActTrap => ScmpAction::Trap,
        A::ScmpActLog => ScmpAction::Log,
        A::ScmpActNotify => ScmpAction::Notify,
    })
}

pub(super) fn arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

fn comparison(arg: &LinuxSeccompArg) -> ScmpArgCompare {
    use LinuxSeccompOperator as O;
    let (op, datum) = match arg.op() {
        O::ScmpCmpNe => (ScmpCompareOp::NotEqual, arg.value()),
        O::ScmpCmpLt => (ScmpCompareOp::Less, arg.value()),
        O::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, arg.value()),
        O::ScmpCmpEq => (ScmpCompareOp::Equal, arg.value()),
        O::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, arg.value()),
        O::ScmpCmpGt => (ScmpCompareOp::Greater, arg.value()),
        // As in libseccomp's SCMP_CMP_MASKED_EQ: value is the mask, valueTwo what the masked
        // argument must equal.
        O::ScmpCmpMaskedEq => (
            ScmpCompareOp::MaskedEqual(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    // check() keeps the index within 0..=5.
    ScmpArgCompare::new(arg.index() as u32, op, datum)
}

/// The rules one syscall entry becomes, each a list of comparisons that must all hold.
/// Comparisons on distinct arguments are ANDed in one rule. When an argument is compared more
/// than once, each comparison becomes a rule of its own (so they are ORed): runc does this,
/// libseccomp refuses two comparisons of one argument in a rule, and profiles written for
/// runc rely on it.
pub(super) fn condition_sets(args: Option<&Vec<LinuxSeccompArg>>) -> Vec<Vec<ScmpArgCompare>> {
    let args = args.map(Vec::as_slice).unwrap_or_default();
    let repeated = args
        .iter()
        .enumerate()
        .any(|(i, a)| args[..i].iter().any(|b| b.index() == a.index()));
    if repeated {
        args.iter().map(|a| vec![comparison(a)]).collect()
    } else {
        vec![args.iter().map(comparison).collect()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> LinuxSeccomp {
        match serde_json::from_str(json) {
            Ok(s) => s,
            Err(e) => panic!("test profile does not parse: {e}\n{json}"),
        }
    }

    fn check_err(json: &str) -> String {
        match check(&parse(json)) {
            Ok(()) => panic!("profile was accepted: {json}"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn errno_defaults_to_eperm() {
        let a = action(LinuxSeccompAction::ScmpActErrno, None, "f").ok();
        assert_eq!(a, Some(ScmpAction::Errno(libc::EPERM)));
        let a = action(LinuxSeccompAction::ScmpActErrno, Some(38), "f").ok();
        assert_eq!(a, Some(ScmpAction::Errno(38)));
        let a = action(LinuxSeccompAction::ScmpActTrace, None, "f").ok();
        assert_eq!(a, Some(ScmpAction::Trace(libc::EPERM as u16)));
    }

    #[test]
    fn kill_means_kill_thread() {
        let a = action(LinuxSeccompAction::ScmpActKill, None, "f").ok();
        assert_eq!(a, Some(ScmpAction::KillThread));
        let a = action(LinuxSeccompAction::ScmpActKillProcess, None, "f").ok();
        assert_eq!(a, Some(ScmpAction::KillProcess));
    }

    #[test]
    fn errno_ret_on_allow_is_rejected_naming_the_field() {
        let e = check_err(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
                {"names":["read"],"action":"SCMP_ACT_ALLOW"},
                {"names":["getpid"],"action":"SCMP_ACT_ALLOW","errnoRet":1}]}"#,
        );
        assert!(e.contains("linux.seccomp.syscalls[1].errnoRet"), "{e}");
        let e = check_err(r#"{"defaultAction":"SCMP_ACT_KILL","defaultErrnoRet":1}"#);
        assert!(e.contains("linux.seccomp.defaultErrnoRet"), "{e}");
    }

    #[test]
    fn huge_errno_is_rejected() {
        let e = check_err(r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":70000}"#);
        assert!(e.contains("defaultErrnoRet") && e.contains("70000"), "{e}");
        let e = check_err(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["ptrace"],"action":"SCMP_ACT_TRACE","errnoRet":65536}]}"#,
        );
        assert!(e.contains("syscalls[0].errnoRet"), "{e}");
    }

    #[test]
    fn bad_arg_index_is_rejected() {
        let e = check_err(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],
                "action":"SCMP_ACT_ERRNO","args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        assert!(e.contains("syscalls[0].args[0].index"), "{e}");
    }

    #[test]
    fn empty_names_are_rejected() {
        let e = check_err(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":[],"action":"SCMP_ACT_LOG"}]}"#,
        );
        assert!(e.contains("syscalls[0].names"), "{e}");
    }

    #[test]
    fn notify_needs_a_listener_and_cannot_be_default() {
        let e = check_err(r#"{"defaultAction":"SCMP_ACT_NOTIFY","listenerPath":"/run/agent"}"#);
        assert!(e.contains("defaultAction"), "{e}");
        let e = check_err(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mount"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        );
        assert!(e.contains("listenerPath"), "{e}");
        let e = check_err(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/agent",
                "syscalls":[{"names":["mount","sendmsg"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        );
        assert!(e.contains("sendmsg"), "{e}");
        let e = check_err(r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerMetadata":"x"}"#);
        assert!(e.contains("listenerMetadata"), "{e}");
        let ok = parse(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/agent",
                "syscalls":[{"names":["mount"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        );
        assert!(check(&ok).is_ok());
    }

    #[test]
    fn unknown_action_or_operator_fails_to_parse() {
        let r: Result<LinuxSeccomp, _> =
            serde_json::from_str(r#"{"defaultAction":"SCMP_ACT_FROB"}"#);
        assert!(r.is_err());
        let r: Result<LinuxSeccomp, _> = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],
                "action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":1,"op":"SCMP_CMP_LIKE"}]}]}"#,
        );
        assert!(r.is_err());
    }

    #[test]
    fn distinct_args_are_anded_repeated_args_are_ored() {
        let s = parse(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
              {"names":["a"],"action":"SCMP_ACT_ERRNO","args":[
                {"index":0,"value":1,"op":"SCMP_CMP_EQ"},{"index":1,"value":2,"op":"SCMP_CMP_EQ"}]},
              {"names":["b"],"action":"SCMP_ACT_ERRNO","args":[
                {"index":0,"value":1,"op":"SCMP_CMP_EQ"},{"index":0,"value":2,"op":"SCMP_CMP_EQ"}]},
              {"names":["c"],"action":"SCMP_ACT_ERRNO"}]}"#,
        );
        let sc = s.syscalls().as_ref().map(Vec::as_slice).unwrap_or_default();
        let shape = |i: usize| -> Vec<usize> {
            condition_sets(sc[i].args().as_ref())
                .iter()
                .map(Vec::len)
                .collect()
        };
        assert_eq!(shape(0), vec![2]);
        assert_eq!(shape(1), vec![1, 1]);
        assert_eq!(shape(2), vec![0]);
    }

    #[test]
    fn masked_eq_uses_value_as_mask_and_value_two_as_datum() {
        let arg: LinuxSeccompArg = match serde_json::from_str(
            r#"{"index":2,"value":240,"valueTwo":16,"op":"SCMP_CMP_MASKED_EQ"}"#,
        ) {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        };
        let expected = ScmpArgCompare::new(2, ScmpCompareOp::MaskedEqual(240), 16);
        assert_eq!(comparison(&arg), expected);
    }
}
