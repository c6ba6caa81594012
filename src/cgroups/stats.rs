//! Resource statistics in the JSON shape of runc's `events` (tools parse these names).

use std::collections::BTreeMap;

use serde::Serialize;

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Debug, Default, Serialize)]
pub struct CpuUsage {
    #[serde(skip_serializing_if = "is_zero")]
    pub total: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty", rename = "percpu_kernel")]
    pub percpu_kernel: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty", rename = "percpu_user")]
    pub percpu_user: Vec<u64>,
    pub kernel: u64,
    pub user: u64,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Throttling {
    #[serde(skip_serializing_if = "is_zero")]
    pub periods: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub throttled_periods: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub throttled_time: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Cpu {
    pub usage: CpuUsage,
    pub throttling: Throttling,
}

#[derive(Debug, Default, Serialize)]
pub struct MemoryEntry {
    pub limit: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Memory {
    #[serde(skip_serializing_if = "is_zero")]
    pub cache: u64,
    pub usage: MemoryEntry,
    pub swap: MemoryEntry,
    pub kernel: MemoryEntry,
    #[serde(rename = "kernelTCP")]
    pub kernel_tcp: MemoryEntry,
    /// memory.stat as is, plus `oom_kill` (processes killed by the OOM killer).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub raw: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Pids {
    #[serde(skip_serializing_if = "is_zero")]
    pub current: u64,
    /// 0 means no limit, as in runc.
    #[serde(skip_serializing_if = "is_zero")]
    pub limit: u64,
}

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct BlkioEntry {
    pub major: u64,
    pub minor: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub op: String,
    pub value: u64,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Blkio {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

#[derive(Debug, Default, Serialize)]
pub struct Hugetlb {
    #[serde(skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Stats {
    pub cpu: Cpu,
    pub memory: Memory,
    pub pids: Pids,
    pub blkio: Blkio,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub hugetlb: BTreeMap<String, Hugetlb>,
}

/// v1 blkio files: "8:0 Read 4096" lines and a "Total N" line that is dropped.
pub fn parse_blkio_v1(text: &str) -> Vec<BlkioEntry> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let dev = f.next()?;
            let op = f.next()?;
            let value = f.next()?.parse().ok()?;
            let (major, minor) = dev.split_once(':')?;
            Some(BlkioEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                op: op.to_string(),
                value,
            })
        })
        .collect()
}

/// v2 io.stat: "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0" per device, turned into
/// runc's v1-shaped entries (bytes and counts, Read and Write).
pub fn parse_io_stat(text: &str) -> (Vec<BlkioEntry>, Vec<BlkioEntry>) {
    let mut bytes = Vec::new();
    let mut ios = Vec::new();
    for l in text.lines() {
        let mut f = l.split_whitespace();
        let Some((major, minor)) = f.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse::<u64>(), minor.parse::<u64>()) else {
            continue;
        };
        for kv in f {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let Ok(value) = v.parse() else { continue };
            let (list, op) = match k {
                "rbytes" => (&mut bytes, "Read"),
                "wbytes" => (&mut bytes, "Write"),
                "rios" => (&mut ios, "Read"),
                "wios" => (&mut ios, "Write"),
                _ => continue,
            };
            list.push(BlkioEntry {
                major,
                minor,
                op: op.to_string(),
                value,
            });
        }
    }
    (bytes, ios)
}

/// One line of `events` output.
#[derive(Debug, Serialize)]
pub struct Event<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a Stats>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blkio_v1_lines_parse_and_total_is_dropped() {
        let e = parse_blkio_v1("8:0 Read 4096\n8:0 Write 0\nTotal 4096\n");
        assert_eq!(e.len(), 2);
        assert_eq!(
            e[0],
            BlkioEntry {
                major: 8,
                minor: 0,
                op: "Read".into(),
                value: 4096
            }
        );
    }

    #[test]
    fn io_stat_maps_to_read_and_write_entries() {
        let (b, i) = parse_io_stat("259:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n");
        assert_eq!(b.len(), 2);
        assert_eq!(b[1].op, "Write");
        assert_eq!(b[1].value, 20);
        assert_eq!(i[0].value, 1);
        assert_eq!(i[0].major, 259);
    }

    #[test]
    fn stats_event_has_runc_field_names() {
        let mut s = Stats::default();
        s.memory.usage.limit = 100;
        s.memory.usage.failcnt = 3;
        s.pids.current = 2;
        s.cpu.throttling.throttled_periods = 4;
        let e = Event {
            kind: "stats",
            id: "c1",
            data: Some(&s),
        };
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "stats");
        assert_eq!(v["data"]["memory"]["usage"]["limit"], 100);
        assert_eq!(v["data"]["memory"]["usage"]["failcnt"], 3);
        assert_eq!(v["data"]["pids"]["current"], 2);
        assert_eq!(v["data"]["cpu"]["throttling"]["throttledPeriods"], 4);
        let oom = serde_json::to_string(&Event {
            kind: "oom",
            id: "c1",
            data: None,
        })
        .unwrap();
        assert_eq!(oom, r#"{"type":"oom","id":"c1"}"#);
    }
}
