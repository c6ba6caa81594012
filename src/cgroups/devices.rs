//! Device access rules: the config's list, lrun's defaults, and how each hierarchy gets them.

use anyhow::{Result, bail};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

/// Access bits as the kernel's BPF device hook numbers them (BPF_DEVCG_ACC_*).
pub const ACC_MKNOD: u8 = 1;
pub const ACC_READ: u8 = 2;
pub const ACC_WRITE: u8 = 4;
pub const ACC_ALL: u8 = ACC_MKNOD | ACC_READ | ACC_WRITE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    All,
    Char,
    Block,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub allow: bool,
    pub kind: Kind,
    /// None is the wildcard `*`.
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: u8,
}

impl Rule {
    const fn allow_char(major: u32, minor: Option<u32>) -> Rule {
        Rule {
            allow: true,
            kind: Kind::Char,
            major: Some(major),
            minor,
            access: ACC_ALL,
        }
    }

    /// `a *:* rwm`: the rule that resets the whole list.
    pub fn is_everything(&self) -> bool {
        self.kind == Kind::All
            && self.major.is_none()
            && self.minor.is_none()
            && self.access == ACC_ALL
    }

    /// The line devices.allow / devices.deny accept.
    pub fn v1_line(&self) -> String {
        if self.is_everything() {
            return "a".to_string();
        }
        let kind = match self.kind {
            Kind::All => 'a',
            Kind::Char => 'c',
            Kind::Block => 'b',
        };
        let num = |n: Option<u32>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
        let mut acc = String::new();
        for (bit, c) in [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')] {
            if self.access & bit != 0 {
                acc.push(c);
            }
        }
        format!("{kind} {}:{} {acc}", num(self.major), num(self.minor))
    }
}

/// What every container may use whatever its config says (runc's list): mknod of anything
/// (opening is what matters), and the basic character devices a process expects.
pub const DEFAULT_ALLOWED: [Rule; 10] = [
    Rule {
        allow: true,
        kind: Kind::Char,
        major: None,
        minor: None,
        access: ACC_MKNOD,
    },
    Rule {
        allow: true,
        kind: Kind::Block,
        major: None,
        minor: None,
        access: ACC_MKNOD,
    },
    Rule::allow_char(1, Some(3)), // null
    Rule::allow_char(1, Some(5)), // zero
    Rule::allow_char(1, Some(7)), // full
    Rule::allow_char(1, Some(8)), // random
    Rule::allow_char(1, Some(9)), // urandom
    Rule::allow_char(5, Some(0)), // tty
    Rule::allow_char(5, Some(2)), // ptmx
    Rule::allow_char(136, None),  // pts/*
];

fn parse_access(s: &str) -> Result<u8> {
    if s.is_empty() {
        return Ok(ACC_ALL);
    }
    let mut acc = 0;
    for c in s.chars() {
        acc |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => bail!("linux.resources.devices: invalid access {s:?} (use r, w, m)"),
        };
    }
    Ok(acc)
}

fn number(n: Option<i64>, what: &str) -> Result<Option<u32>> {
    match n {
        None => Ok(None),
        Some(-1) => Ok(None),
        Some(v) => match u32::try_from(v) {
            Ok(v) => Ok(Some(v)),
            Err(_) => bail!("linux.resources.devices: invalid {what} number {v}"),
        },
    }
}

pub fn from_oci(d: &LinuxDeviceCgroup) -> Result<Option<Rule>> {
    let kind = match d.typ() {
        None | Some(LinuxDeviceType::A) => Kind::All,
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => Kind::Char,
        Some(LinuxDeviceType::B) => Kind::Block,
        // A FIFO is not a device the cgroup controls.
        Some(LinuxDeviceType::P) => return Ok(None),
    };
    Ok(Some(Rule {
        allow: d.allow(),
        kind,
        major: number(d.major(), "major")?,
        minor: number(d.minor(), "minor")?,
        access: parse_access(d.access().as_deref().unwrap_or(""))?,
    }))
}

/// The full ordered list a container gets: deny everything, then the config's rules, then
/// the defaults, so a config cannot take /dev/null away by accident (runc does the same).
pub fn effective_rules(config: &[LinuxDeviceCgroup], extra_allowed: &[Rule]) -> Result<Vec<Rule>> {
    let mut rules = vec![Rule {
        allow: false,
        kind: Kind::All,
        major: None,
        minor: None,
        access: ACC_ALL,
    }];
    for d in config {
        if let Some(r) = from_oci(d)? {
            rules.push(r);
        }
    }
    rules.extend_from_slice(extra_allowed);
    rules.extend_from_slice(&DEFAULT_ALLOWED);
    Ok(rules)
}

/// Reduce an ordered list to a default verdict plus the rules after the last reset, which is
/// what a first-match program needs.
pub fn reduce(rules: &[Rule]) -> (bool, Vec<Rule>) {
    let mut default_allow = false;
    let mut rest = Vec::new();
    for r in rules {
        if r.is_everything() {
            default_allow = r.allow;
            rest.clear();
        } else {
            rest.push(*r);
        }
    }
    (default_allow, rest)
}

/// Reference semantics of a reduced list, the same as the BPF program implements: the last
/// matching rule decides. A deny rule matches if it covers any requested access bit; an
/// allow rule only if it covers all of them (as the v1 controller checks exceptions).
pub fn decide(
    default_allow: bool,
    rules: &[Rule],
    kind: Kind,
    major: u32,
    minor: u32,
    access: u8,
) -> bool {
    for r in rules.iter().rev() {
        if r.kind != Kind::All && r.kind != kind {
            continue;
        }
        if r.major.is_some_and(|m| m != major) || r.minor.is_some_and(|m| m != minor) {
            continue;
        }
        let matches = if r.allow {
            access & !r.access == 0
        } else {
            access & r.access != 0
        };
        if matches {
            return r.allow;
        }
    }
    default_allow
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    #[test]
    fn default_list_allows_basics_and_denies_disks() {
        let rules = effective_rules(&[], &[]).unwrap();
        let (def, rest) = reduce(&rules);
        assert!(!def);
        assert!(decide(def, &rest, Kind::Char, 1, 3, ACC_READ | ACC_WRITE));
        assert!(decide(def, &rest, Kind::Char, 136, 7, ACC_READ));
        assert!(!decide(def, &rest, Kind::Block, 8, 0, ACC_READ));
        assert!(decide(def, &rest, Kind::Block, 8, 0, ACC_MKNOD));
        assert!(!decide(def, &rest, Kind::Char, 10, 200, ACC_READ));
    }

    #[test]
    fn later_rules_override_earlier_ones() {
        let cfg = vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .access("rwm")
                .build()
                .unwrap(),
            LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .typ(LinuxDeviceType::B)
                .major(8)
                .access("w")
                .build()
                .unwrap(),
        ];
        let (def, rest) = reduce(&effective_rules(&cfg, &[]).unwrap());
        assert!(def, "allow-all resets the default");
        assert!(decide(def, &rest, Kind::Block, 8, 1, ACC_READ));
        assert!(!decide(def, &rest, Kind::Block, 8, 1, ACC_WRITE));
        assert!(!decide(def, &rest, Kind::Block, 8, 1, ACC_READ | ACC_WRITE));
        assert!(decide(def, &rest, Kind::Block, 9, 1, ACC_WRITE));
    }

    #[test]
    fn only_defaults_are_allowed_implicitly() {
        // A device in linux.devices (here /dev/kmsg, 1:11) gets no rule of its own: with the
        // config's deny-all it stays denied, as runc keeps it.
        let deny_all = vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .access("rwm")
                .build()
                .unwrap(),
        ];
        let (def, rest) = reduce(&effective_rules(&deny_all, &[]).unwrap());
        assert!(!decide(def, &rest, Kind::Char, 1, 11, ACC_WRITE));
        assert!(decide(def, &rest, Kind::Char, 1, 3, ACC_WRITE));
    }

    #[test]
    fn v1_lines_and_bad_access() {
        assert_eq!(DEFAULT_ALLOWED[9].v1_line(), "c 136:* rwm");
        assert_eq!(DEFAULT_ALLOWED[1].v1_line(), "b *:* m");
        let bad = LinuxDeviceCgroupBuilder::default()
            .access("rx")
            .build()
            .unwrap();
        assert!(from_oci(&bad).is_err());
    }
}
