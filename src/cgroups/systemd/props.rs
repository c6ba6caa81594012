//! Which unit properties stand for which `linux.resources` fields, as runc maps them: pure
//! functions of the config, the layout and systemd's version, tested without systemd.
//!
//! Everything mapped here is also written through the filesystem afterwards (the driver
//! does both, as runc does), so a property systemd lacks only loses systemd's own record of
//! the limit; the properties exist so that systemd, when it re-applies a unit's settings
//! (daemon-reload, another property change), writes the container's values and not its
//! defaults over them.

use anyhow::{Context, Result};
use oci_spec::runtime::LinuxResources;

use crate::cgroups::devices::{self, Kind, Rule};
use crate::cgroups::v2;
use crate::logging;

/// A property value in the D-Bus types systemd expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Bool(bool),
    U64(u64),
    Str(String),
    /// `au` (PIDs).
    U32s(Vec<u32>),
    /// `ay` (AllowedCPUs, AllowedMemoryNodes: a bitmask, lowest CPU in bit 0 of byte 0).
    Bytes(Vec<u8>),
    /// `a(ss)` (DeviceAllow: path or group, access).
    Pairs(Vec<(String, String)>),
}

pub type Prop = (&'static str, Value);

/// systemd's "infinity" for sizes, counts and times.
pub const INFINITY: u64 = u64::MAX;

/// The kernel's default CFS period, which systemd also assumes.
const DEFAULT_PERIOD_US: u64 = 100_000;

/// The properties a new scope gets besides the resources: where it goes, what it is, that
/// the container manages its own subtree (Delegate), and accounting for every controller
/// systemd manages, so it creates the scope's directory in each of them (runc does the same).
pub fn scope(slice: &str, description: &str, pid: u32, v2: bool) -> Vec<Prop> {
    vec![
        ("Description", Value::Str(description.to_string())),
        ("Slice", Value::Str(slice.to_string())),
        ("PIDs", Value::U32s(vec![pid])),
        ("Delegate", Value::Bool(true)),
        ("MemoryAccounting", Value::Bool(true)),
        ("CPUAccounting", Value::Bool(true)),
        (
            if v2 {
                "IOAccounting"
            } else {
                "BlockIOAccounting"
            },
            Value::Bool(true),
        ),
        ("TasksAccounting", Value::Bool(true)),
        // No ordering against shutdown.target and friends: the container is not a service.
        ("DefaultDependencies", Value::Bool(false)),
    ]
}

/// The properties for `r` (and the device list when `rules` is given) on cgroup v2 (`v2`)
/// or v1, for systemd `version`.
pub fn resources(
    r: &LinuxResources,
    rules: Option<&[Rule]>,
    v2: bool,
    version: u32,
) -> Result<Vec<Prop>> {
    let mut p = Vec::new();
    if let Some(m) = r.memory() {
        let limit = m.limit().filter(|&l| l != 0);
        if let Some(l) = limit {
            p.push(("MemoryMax", Value::U64(size(l))));
        }
        // v1 keeps these in files systemd does not manage (soft limit, memsw).
        if v2 {
            if let Some(res) = m.reservation().filter(|&r| r != 0) {
                p.push(("MemoryLow", Value::U64(size(res))));
            }
            // On update the limit may be absent: the filesystem write works out the split.
            if let Some(s) = m.swap().filter(|&s| s != 0)
                && (s == -1 || limit.is_some())
            {
                let v = v2::swap_max(s, limit)?;
                let v = match v.as_str() {
                    "max" => INFINITY,
                    n => n
                        .parse()
                        .with_context(|| format!("linux.resources.memory.swap {s}"))?,
                };
                p.push(("MemorySwapMax", Value::U64(v)));
            }
        }
    }
    if let Some(c) = r.cpu() {
        if let Some(s) = c.shares().filter(|&s| s != 0) {
            if v2 {
                p.push(("CPUWeight", Value::U64(v2::shares_to_weight(s))));
            } else {
                p.push(("CPUShares", Value::U64(s)));
            }
        }
        cpu_quota(
            &mut p,
            c.quota().unwrap_or(0),
            c.period().unwrap_or(0),
            version,
        );
        // systemd has no cpuset controller on v1: the driver's own directory has it there.
        if v2 && version >= 244 {
            if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
                let bits = range_to_bits(cpus).context("linux.resources.cpu.cpus")?;
                p.push(("AllowedCPUs", Value::Bytes(bits)));
            }
            if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
                let bits = range_to_bits(mems).context("linux.resources.cpu.mems")?;
                p.push(("AllowedMemoryNodes", Value::Bytes(bits)));
            }
        }
    }
    if let Some(pids) = r.pids() {
        match pids.limit() {
            0 => {}
            l if l < 0 => p.push(("TasksMax", Value::U64(INFINITY))),
            l => p.push(("TasksMax", Value::U64(l as u64))),
        }
    }
    if let Some(w) = r
        .block_io()
        .as_ref()
        .and_then(|b| b.weight())
        .filter(|&w| w != 0)
    {
        if v2 {
            p.push(("IOWeight", Value::U64(v2::blkio_to_io_weight(w))));
        } else {
            p.push(("BlockIOWeight", Value::U64(u64::from(w))));
        }
    }
    if let Some(rules) = rules {
        p.extend(device_props(rules, v2, version));
    }
    Ok(p)
}

/// A byte count from the config: -1 (or any negative) is unlimited.
fn size(v: i64) -> u64 {
    if v < 0 { INFINITY } else { v as u64 }
}

/// CPUQuotaPerSecUSec (and CPUQuotaPeriodUSec, systemd 242+). systemd keeps the quota as a
/// whole percentage of a CPU, so it is rounded up to the next 10 ms per second (runc does
/// the same, so that sub-cgroups can still be given the quota the config asked for).
fn cpu_quota(p: &mut Vec<Prop>, quota: i64, period: u64, version: u32) {
    if period != 0 && version >= 242 {
        p.push(("CPUQuotaPeriodUSec", Value::U64(period)));
    }
    if quota == 0 && period == 0 {
        return;
    }
    let per_sec = if quota > 0 {
        let period = if period == 0 {
            DEFAULT_PERIOD_US
        } else {
            period
        };
        let v = (quota as u64).saturating_mul(1_000_000) / period;
        v.div_ceil(10_000) * 10_000
    } else {
        INFINITY
    };
    p.push(("CPUQuotaPerSecUSec", Value::U64(per_sec)));
}

/// "0-3,8" as systemd's CPU bitmask.
pub fn range_to_bits(list: &str) -> Result<Vec<u8>> {
    let mut bits: Vec<u8> = Vec::new();
    for part in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let parse = |s: &str| -> Result<usize> {
            let n: usize = s
                .parse()
                .with_context(|| format!("invalid CPU list {list:?}"))?;
            anyhow::ensure!(n < 8192, "invalid CPU list {list:?}: {n} is too large");
            Ok(n)
        };
        let (a, b) = (parse(a)?, parse(b)?);
        anyhow::ensure!(a <= b, "invalid CPU list {list:?}: {a} > {b}");
        for n in a..=b {
            if bits.len() <= n / 8 {
                bits.resize(n / 8 + 1, 0);
            }
            bits[n / 8] |= 1 << (n % 8);
        }
    }
    anyhow::ensure!(!bits.is_empty(), "invalid CPU list {list:?}: empty");
    Ok(bits)
}

/// DevicePolicy and DeviceAllow for an ordered rule list (lrun's: deny all, the config's,
/// the defaults). systemd only knows allow lists:
/// - allow everything: DevicePolicy=auto with no entries (systemd then restricts nothing);
/// - allow everything but some denials: no allow list can say that. On v2 systemd stays out
///   of the way (auto) and lrun's own BPF program denies; on v1 systemd writes devices.allow
///   "a" whenever it re-applies an auto policy, so there it is told to deny everything
///   (strict, empty) and lrun's rules, written after, allow the rest, as runc does;
/// - otherwise DevicePolicy=strict and the allow list, with the denials that follow an
///   allow taken out of it.
pub fn device_props(rules: &[Rule], v2: bool, version: u32) -> Vec<Prop> {
    let (default_allow, rest) = devices::reduce(rules);
    let policy = |p: &str| ("DevicePolicy", Value::Str(p.into()));
    if default_allow {
        if rest.iter().all(|r| r.allow) || v2 {
            return vec![policy("auto"), ("DeviceAllow", Value::Pairs(Vec::new()))];
        }
        logging::warn(
            "systemd cannot express device denials after allowing all devices: its own rules deny all, lrun's allow the rest",
        );
        return vec![policy("strict"), ("DeviceAllow", Value::Pairs(Vec::new()))];
    }
    let mut allowed: Vec<Rule> = Vec::new();
    for r in rest {
        if r.allow {
            allowed.push(r);
            continue;
        }
        allowed.retain_mut(|a| {
            if covers(&r, a) {
                a.access &= !r.access;
            } else if overlaps(&r, a) && !v2 {
                // Only part of `a` is denied: on v1 leave all of it to lrun's rules.
                a.access = 0;
            }
            a.access != 0
        });
    }
    let mut entries = Vec::new();
    for a in &allowed {
        let kinds: &[(Kind, &str)] = match a.kind {
            Kind::All => &[(Kind::Char, "char"), (Kind::Block, "block")],
            Kind::Char => &[(Kind::Char, "char")],
            Kind::Block => &[(Kind::Block, "block")],
        };
        for &(_, name) in kinds {
            let path = match (a.major, a.minor) {
                (None, None) => format!("{name}-*"),
                (Some(maj), None) if version >= 240 => format!("{name}-{maj}"),
                (Some(maj), Some(min)) => format!("/dev/{name}/{maj}:{min}"),
                // "*:N" has no systemd spelling, nor "N:*" before v240: lrun's rules cover it.
                _ => {
                    logging::debug(&format!("no DeviceAllow entry for {}", a.v1_line()));
                    continue;
                }
            };
            entries.push((path, access(a.access)));
        }
    }
    vec![policy("strict"), ("DeviceAllow", Value::Pairs(entries))]
}

/// Does deny rule `d` match every device allow rule `a` matches?
fn covers(d: &Rule, a: &Rule) -> bool {
    (d.kind == Kind::All || d.kind == a.kind)
        && (d.major.is_none() || d.major == a.major)
        && (d.minor.is_none() || d.minor == a.minor)
}

/// Do `d` and `a` match some device in common?
fn overlaps(d: &Rule, a: &Rule) -> bool {
    let num = |x: Option<u32>, y: Option<u32>| x.is_none() || y.is_none() || x == y;
    (d.kind == Kind::All || a.kind == Kind::All || d.kind == a.kind)
        && num(d.major, a.major)
        && num(d.minor, a.minor)
        && d.access & a.access != 0
}

fn access(bits: u8) -> String {
    let mut s = String::new();
    for (bit, c) in [
        (devices::ACC_READ, 'r'),
        (devices::ACC_WRITE, 'w'),
        (devices::ACC_MKNOD, 'm'),
    ] {
        if bits & bit != 0 {
            s.push(c);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType};

    fn res(j: serde_json::Value) -> LinuxResources {
        serde_json::from_value(j).unwrap()
    }

    fn get<'a>(p: &'a [Prop], name: &str) -> Option<&'a Value> {
        p.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    #[test]
    fn limits_map_to_unit_properties_on_v2() {
        let r = res(serde_json::json!({
            "memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 96 << 20},
            "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1,3", "mems": "0"},
            "pids": {"limit": 50},
            "blockIO": {"weight": 500}
        }));
        let p = resources(&r, None, true, 252).unwrap();
        assert_eq!(get(&p, "MemoryMax"), Some(&Value::U64(64 << 20)));
        assert_eq!(get(&p, "MemoryLow"), Some(&Value::U64(32 << 20)));
        assert_eq!(get(&p, "MemorySwapMax"), Some(&Value::U64(32 << 20)));
        assert_eq!(get(&p, "CPUWeight"), Some(&Value::U64(39)));
        assert_eq!(get(&p, "CPUQuotaPerSecUSec"), Some(&Value::U64(500_000)));
        assert_eq!(get(&p, "CPUQuotaPeriodUSec"), Some(&Value::U64(100_000)));
        assert_eq!(get(&p, "AllowedCPUs"), Some(&Value::Bytes(vec![0b1011])));
        assert_eq!(get(&p, "AllowedMemoryNodes"), Some(&Value::Bytes(vec![1])));
        assert_eq!(get(&p, "TasksMax"), Some(&Value::U64(50)));
        assert_eq!(get(&p, "IOWeight"), Some(&Value::U64(4950)));
        assert_eq!(get(&p, "CPUShares"), None);
        assert_eq!(get(&p, "DevicePolicy"), None, "no device list given");
    }

    #[test]
    fn limits_map_to_unit_properties_on_v1() {
        let r = res(serde_json::json!({
            "memory": {"limit": -1, "reservation": 1, "swap": 5},
            "cpu": {"shares": 512, "quota": -1, "cpus": "0"},
            "pids": {"limit": -1},
            "blockIO": {"weight": 300}
        }));
        let p = resources(&r, None, false, 252).unwrap();
        assert_eq!(get(&p, "MemoryMax"), Some(&Value::U64(INFINITY)));
        assert_eq!(get(&p, "MemoryLow"), None, "v1's soft limit is a file");
        assert_eq!(get(&p, "MemorySwapMax"), None, "v1's memsw is a file");
        assert_eq!(get(&p, "CPUShares"), Some(&Value::U64(512)));
        assert_eq!(get(&p, "CPUQuotaPerSecUSec"), Some(&Value::U64(INFINITY)));
        assert_eq!(get(&p, "AllowedCPUs"), None, "systemd has no v1 cpuset");
        assert_eq!(get(&p, "TasksMax"), Some(&Value::U64(INFINITY)));
        assert_eq!(get(&p, "BlockIOWeight"), Some(&Value::U64(300)));
    }

    #[test]
    fn cpu_quota_rounds_up_to_whole_percents_and_old_systemd_gets_no_period() {
        let r = res(serde_json::json!({"cpu": {"quota": 33333, "period": 200000}}));
        let p = resources(&r, None, true, 241).unwrap();
        // 166665 us per second, rounded up to 170 ms.
        assert_eq!(get(&p, "CPUQuotaPerSecUSec"), Some(&Value::U64(170_000)));
        assert_eq!(get(&p, "CPUQuotaPeriodUSec"), None);
        let r = res(serde_json::json!({"cpu": {"quota": 20000}}));
        let p = resources(&r, None, true, 252).unwrap();
        assert_eq!(get(&p, "CPUQuotaPerSecUSec"), Some(&Value::U64(200_000)));
        // Zeroes mean "not given".
        let r = res(serde_json::json!({"cpu": {"quota": 0, "period": 0, "shares": 0}}));
        assert!(resources(&r, None, true, 252).unwrap().is_empty());
    }

    #[test]
    fn cpu_lists_become_bitmasks() {
        assert_eq!(range_to_bits("0").unwrap(), [1]);
        assert_eq!(range_to_bits("1-2, 9").unwrap(), [0b110, 0b10]);
        for bad in ["", "3-1", "a", "1-x", "100000"] {
            assert!(range_to_bits(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn default_devices_become_a_strict_allow_list() {
        let rules = devices::effective_rules(&[], &[]).unwrap();
        let p = device_props(&rules, true, 252);
        assert_eq!(get(&p, "DevicePolicy"), Some(&Value::Str("strict".into())));
        let Some(Value::Pairs(list)) = get(&p, "DeviceAllow") else {
            panic!("{p:?}")
        };
        let has = |path: &str, acc: &str| list.contains(&(path.to_string(), acc.to_string()));
        assert!(has("char-*", "m") && has("block-*", "m"), "{list:?}");
        assert!(has("/dev/char/1:3", "rwm"), "{list:?}");
        assert!(has("char-136", "rwm"), "{list:?}");
        assert_eq!(list.len(), 10);
        // Before v240 a whole major has no spelling: left to lrun's own rules.
        let p = device_props(&rules, true, 239);
        let Some(Value::Pairs(list)) = get(&p, "DeviceAllow") else {
            panic!()
        };
        assert!(!list.iter().any(|(p, _)| p == "char-136"));
    }

    #[test]
    fn allow_all_and_denials_after_it() {
        let allow_all = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .access("rwm")
            .build()
            .unwrap();
        let rules = devices::effective_rules(std::slice::from_ref(&allow_all), &[]).unwrap();
        let p = device_props(&rules, false, 252);
        assert_eq!(get(&p, "DevicePolicy"), Some(&Value::Str("auto".into())));
        assert_eq!(get(&p, "DeviceAllow"), Some(&Value::Pairs(vec![])));

        let deny_sda = LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .typ(LinuxDeviceType::B)
            .major(8)
            .minor(0)
            .access("rwm")
            .build()
            .unwrap();
        let rules = devices::effective_rules(&[allow_all, deny_sda], &[]).unwrap();
        let v1 = device_props(&rules, false, 252);
        assert_eq!(get(&v1, "DevicePolicy"), Some(&Value::Str("strict".into())));
        assert_eq!(get(&v1, "DeviceAllow"), Some(&Value::Pairs(vec![])));
        let v2 = device_props(&rules, true, 252);
        assert_eq!(get(&v2, "DevicePolicy"), Some(&Value::Str("auto".into())));
    }

    #[test]
    fn a_denial_takes_access_out_of_earlier_allows() {
        let allow = |maj: i64, acc: &str| {
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .major(maj)
                .minor(1)
                .access(acc)
                .build()
                .unwrap()
        };
        let deny_w = LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .typ(LinuxDeviceType::C)
            .access("w")
            .build()
            .unwrap();
        let rules = [
            devices::from_oci(&allow(10, "rwm")).unwrap().unwrap(),
            devices::from_oci(&allow(11, "w")).unwrap().unwrap(),
            devices::from_oci(&deny_w).unwrap().unwrap(),
        ];
        let p = device_props(&rules, true, 252);
        assert_eq!(
            get(&p, "DeviceAllow"),
            Some(&Value::Pairs(vec![("/dev/char/10:1".into(), "rm".into())]))
        );
    }

    #[test]
    fn a_new_scope_is_delegated_with_accounting() {
        let p = scope("machine.slice", "lrun container c1", 42, false);
        assert_eq!(get(&p, "PIDs"), Some(&Value::U32s(vec![42])));
        assert_eq!(get(&p, "Delegate"), Some(&Value::Bool(true)));
        assert_eq!(get(&p, "Slice"), Some(&Value::Str("machine.slice".into())));
        assert_eq!(get(&p, "BlockIOAccounting"), Some(&Value::Bool(true)));
        assert!(get(&scope("s.slice", "d", 1, true), "IOAccounting").is_some());
    }
}
