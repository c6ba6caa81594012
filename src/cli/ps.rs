//! `lrun ps ID`: the processes of a container, from its cgroup.

use std::collections::HashSet;
use std::io::Write;
use std::process::Command;

use anyhow::{Context, bail};

use super::Globals;
use crate::cgroups;
use crate::state::StateRoot;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(short, long, default_value = "table")]
    pub format: String,
    pub id: String,
    /// Options passed to ps(1) (table format only).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    let (_, st) = StateRoot::new(&g.root).load(&a.id)?;
    let pids = cgroups::open_driver(&st.cgroups)
        .and_then(|d| d.pids())
        .with_context(|| format!("list processes of container {:?}", a.id))?;
    match a.format.as_str() {
        "json" => {
            let mut out = std::io::stdout().lock();
            serde_json::to_writer(&mut out, &pids).context("write pids")?;
            writeln!(out).context("write pids")?;
        }
        "table" => {
            let args = if a.ps_args.is_empty() {
                vec!["-ef".to_string()]
            } else {
                a.ps_args
            };
            let output = Command::new("ps")
                .args(&args)
                .output()
                .context("run ps(1)")?;
            if !output.status.success() {
                bail!(
                    "ps {} failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&output.stderr).trim()
                );
            }
            let text = String::from_utf8_lossy(&output.stdout);
            let table = filter_table(&text, &pids.into_iter().collect())?;
            std::io::stdout()
                .write_all(table.as_bytes())
                .context("write ps table")?;
        }
        other => bail!("invalid format {other:?}: use table or json"),
    }
    Ok(0)
}

/// Keep ps's header and the lines whose PID column is one of `pids`.
fn filter_table(text: &str, pids: &HashSet<i32>) -> anyhow::Result<String> {
    let mut lines = text.lines();
    let header = lines.next().context("ps printed nothing")?;
    let col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .context("ps output has no PID column (pass options that include it)")?;
    let mut out = format!("{header}\n");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(col)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_keeps_header_and_container_pids_only() {
        let ps = "UID PID PPID C STIME TTY TIME CMD\n\
                  root 1 0 0 10:00 ? 00:00:01 /sbin/init\n\
                  root 42 1 0 10:00 ? 00:00:00 sleep 10\n\
                  root 420 1 0 10:00 ? 00:00:00 sh\n";
        let t = filter_table(ps, &[42].into_iter().collect()).unwrap();
        assert_eq!(
            t,
            "UID PID PPID C STIME TTY TIME CMD\nroot 42 1 0 10:00 ? 00:00:00 sleep 10\n"
        );
        assert!(filter_table("USER COMMAND\n", &HashSet::new()).is_err());
    }
}
