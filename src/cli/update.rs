//! `lrun update ID` and `lrun events ID`, with runc's flags and output.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxPidsBuilder, LinuxResources};

use super::Globals;
use crate::cgroups;
use crate::cgroups::oom::Wake;
use crate::cgroups::stats::Event;
use crate::state::{StateRoot, Status};

#[derive(clap::Args, Debug)]
pub struct Args {
    pub id: String,
    // Boxed: these many flags would otherwise make every CLI command value large.
    #[command(flatten)]
    pub flags: Box<Flags>,
}

#[derive(clap::Args, Debug)]
#[command(next_display_order = 100)]
pub struct Flags {
    /// Read the new limits from this OCI linux.resources JSON file ("-" for stdin); the other
    /// flags are then ignored.
    #[arg(short = 'r', long = "resources")]
    pub resources: Option<PathBuf>,
    /// Block IO weight (10-1000).
    #[arg(long)]
    pub blkio_weight: Option<u16>,
    /// CPU CFS period in microseconds.
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// CPU CFS quota in microseconds (-1: no limit).
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CPU shares (relative weight).
    #[arg(long = "cpu-share", visible_alias = "cpu-shares")]
    pub cpu_share: Option<u64>,
    /// Realtime period in microseconds.
    #[arg(long)]
    pub cpu_rt_period: Option<u64>,
    /// Realtime runtime in microseconds.
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_rt_runtime: Option<i64>,
    /// CPUs allowed (e.g. 0-3,5).
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes allowed (e.g. 0-1).
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Memory limit, in bytes or with a k/m/g suffix (-1: no limit).
    #[arg(long, allow_hyphen_values = true)]
    pub memory: Option<String>,
    /// Memory soft limit.
    #[arg(long, allow_hyphen_values = true)]
    pub memory_reservation: Option<String>,
    /// Memory plus swap limit (-1: unlimited swap).
    #[arg(long, allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Obsolete since Linux 5.4; accepted and ignored.
    #[arg(long, allow_hyphen_values = true)]
    pub kernel_memory: Option<String>,
    /// Kernel TCP buffer memory limit (cgroup v1).
    #[arg(long, allow_hyphen_values = true)]
    pub kernel_memory_tcp: Option<String>,
    /// Maximum number of processes (-1: no limit).
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Intel RDT: not supported by lrun.
    #[arg(long, hide = true)]
    pub l3_cache_schema: Option<String>,
    /// Intel RDT: not supported by lrun.
    #[arg(long, hide = true)]
    pub mem_bw_schema: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    pub id: String,
    /// Print the statistics once and exit.
    #[arg(long)]
    pub stats: bool,
    /// How often to print statistics (e.g. 5s, 500ms, 1m).
    #[arg(long, default_value = "5s")]
    pub interval: String,
}

pub fn run(g: &Globals, a: Args) -> Result<i32> {
    let (_lock, dir, st) = super::pause::load_locked(g, &a.id)?;
    let status = st.status(&dir, cgroups::is_frozen);
    if !matches!(status, Status::Created | Status::Running | Status::Paused) {
        bail!("container {:?} is {status}: cannot update", a.id);
    }
    let resources = match &a.flags.resources {
        Some(path) => read_resources(path)?,
        None => resources_from_flags(&a.flags)?,
    };
    cgroups::open_driver(&st.cgroups)
        .and_then(|d| d.update(&resources))
        .with_context(|| format!("update container {:?}", a.id))?;
    Ok(0)
}

fn read_resources(path: &PathBuf) -> Result<LinuxResources> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("read resources from stdin")?;
    } else {
        text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    }
    let de = &mut serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de)
        .with_context(|| format!("parse linux.resources from {}", path.display()))
}

fn resources_from_flags(a: &Flags) -> Result<LinuxResources> {
    if a.l3_cache_schema.is_some() || a.mem_bw_schema.is_some() {
        bail!("Intel RDT (--l3-cache-schema, --mem-bw-schema) is not supported");
    }
    let mut r = LinuxResources::default();
    let bytes = |v: &Option<String>, flag: &str| -> Result<Option<i64>> {
        v.as_deref()
            .map(|s| parse_bytes(s).with_context(|| format!("--{flag} {s:?}")))
            .transpose()
    };
    let limit = bytes(&a.memory, "memory")?;
    let reservation = bytes(&a.memory_reservation, "memory-reservation")?;
    let swap = bytes(&a.memory_swap, "memory-swap")?;
    let kernel = bytes(&a.kernel_memory, "kernel-memory")?;
    let kernel_tcp = bytes(&a.kernel_memory_tcp, "kernel-memory-tcp")?;
    if limit.is_some() || reservation.is_some() || swap.is_some() || kernel_tcp.is_some() {
        let mut m = LinuxMemory::default();
        m.set_limit(limit);
        m.set_reservation(reservation);
        m.set_swap(swap);
        m.set_kernel_tcp(kernel_tcp);
        r.set_memory(Some(m));
    }
    if kernel.is_some() {
        crate::logging::warn("--kernel-memory is obsolete since Linux 5.4 and ignored");
    }
    let cpu_given = a.cpu_period.is_some()
        || a.cpu_quota.is_some()
        || a.cpu_share.is_some()
        || a.cpu_rt_period.is_some()
        || a.cpu_rt_runtime.is_some()
        || a.cpuset_cpus.is_some()
        || a.cpuset_mems.is_some();
    if cpu_given {
        let mut c = LinuxCpu::default();
        c.set_period(a.cpu_period);
        c.set_quota(a.cpu_quota);
        c.set_shares(a.cpu_share);
        c.set_realtime_period(a.cpu_rt_period);
        c.set_realtime_runtime(a.cpu_rt_runtime);
        c.set_cpus(a.cpuset_cpus.clone());
        c.set_mems(a.cpuset_mems.clone());
        r.set_cpu(Some(c));
    }
    if let Some(p) = a.pids_limit {
        r.set_pids(Some(
            LinuxPidsBuilder::default()
                .limit(p)
                .build()
                .context("pids limit")?,
        ));
    }
    if let Some(w) = a.blkio_weight {
        let mut b = oci_spec::runtime::LinuxBlockIo::default();
        b.set_weight(Some(w));
        r.set_block_io(Some(b));
    }
    Ok(r)
}

/// Sizes as runc's flags take them: plain bytes, or a number with a binary suffix
/// (k, m, g, t, p; optionally followed by "b" or "ib"); -1 means no limit.
pub fn parse_bytes(s: &str) -> Result<i64> {
    let t = s.trim();
    if t == "-1" {
        return Ok(-1);
    }
    let lower = t.to_ascii_lowercase();
    let num_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(num_end);
    let value: f64 = num.parse().with_context(|| format!("invalid size {s:?}"))?;
    let unit = unit.trim();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit);
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => bail!("invalid size {s:?}: unknown unit"),
    };
    let bytes = value * mult;
    if !(0.0..9.2e18).contains(&bytes) {
        bail!("invalid size {s:?}: out of range");
    }
    Ok(bytes as i64)
}

/// Go-style durations as runc's --interval takes them: "5s", "250ms", "1m30s", "1.5h".
pub fn parse_duration(s: &str) -> Result<Duration> {
    let mut rest = s.trim();
    if rest.is_empty() {
        bail!("invalid duration {s:?}");
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .with_context(|| format!("invalid duration {s:?}: missing unit"))?;
        let value: f64 = rest[..n]
            .parse()
            .with_context(|| format!("invalid duration {s:?}"))?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let secs = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => bail!("invalid duration {s:?}: unknown unit {other:?}"),
        };
        total += value * secs;
        rest = &rest[u..];
    }
    Ok(Duration::from_secs_f64(total))
}

fn print_event(event: &Event) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, event).context("write event")?;
    writeln!(out).context("write event")?;
    out.flush().context("write event")
}

pub fn events(g: &Globals, a: EventsArgs) -> Result<i32> {
    let interval = parse_duration(&a.interval)?;
    if interval.is_zero() {
        bail!("--interval must be greater than 0");
    }
    let (dir, st) = StateRoot::new(&g.root).load(&a.id)?;
    if st.status(&dir, cgroups::is_frozen) == Status::Stopped {
        bail!("container {:?} is not running", a.id);
    }
    let cgroup = cgroups::open_driver(&st.cgroups)?;
    let print_stats = || -> Result<()> {
        let stats = cgroup
            .stats()
            .with_context(|| format!("statistics of container {:?}", a.id))?;
        print_event(&Event {
            kind: "stats",
            id: &a.id,
            data: Some(&stats),
        })
    };
    if a.stats {
        print_stats()?;
        return Ok(0);
    }
    let mut watcher = cgroup.oom_watcher()?;
    loop {
        if st.status(&dir, cgroups::is_frozen) == Status::Stopped {
            return Ok(0);
        }
        print_stats()?;
        let deadline = Instant::now() + interval;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let Some(w) = watcher.as_mut() else {
                std::thread::sleep(left);
                break;
            };
            match w.wait(left)? {
                Wake::Timeout => {}
                Wake::Oom(_) => print_event(&Event {
                    kind: "oom",
                    id: &a.id,
                    data: None,
                })?,
                Wake::Gone => return Ok(0),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_runc() {
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert_eq!(parse_bytes("512m").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1G").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("1.5k").unwrap(), 1536);
        assert_eq!(parse_bytes("2MiB").unwrap(), 2 << 20);
        assert_eq!(parse_bytes("-1").unwrap(), -1);
        assert!(parse_bytes("12q").is_err());
        assert!(parse_bytes("-5").is_err());
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5x").is_err());
    }

    #[test]
    fn flags_become_partial_resources() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            a: Args,
        }
        let t = T::try_parse_from([
            "t",
            "c1",
            "--memory",
            "64m",
            "--cpu-shares",
            "512",
            "--cpu-quota",
            "-1",
            "--pids-limit",
            "30",
        ])
        .unwrap();
        let r = resources_from_flags(&t.a.flags).unwrap();
        let m = r.memory().unwrap();
        assert_eq!(m.limit(), Some(64 << 20));
        assert_eq!(m.swap(), None);
        let c = r.cpu().as_ref().unwrap();
        assert_eq!(c.shares(), Some(512));
        assert_eq!(c.quota(), Some(-1));
        assert_eq!(c.period(), None);
        assert_eq!(r.pids().unwrap().limit(), 30);
        assert!(r.block_io().is_none());
    }
}
