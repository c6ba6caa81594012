//! `lrun list`: a table, or JSON with `--format json`.

use super::Globals;
use crate::cgroups;
use crate::state::Status;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
    /// Print only the ids.
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    let states = g.runtime().states();
    let mut rows = Vec::new();
    for id in states.list()? {
        // A container being created (or whose creator died) has no state yet: skip it.
        let Ok((dir, st)) = states.load(&id) else {
            continue;
        };
        let status = st.status(&dir, cgroups::is_frozen);
        rows.push((st, status));
    }
    if a.quiet {
        for (st, _) in &rows {
            println!("{}", st.id);
        }
    } else if a.format == "json" {
        let docs: Vec<_> = rows.iter().map(|(st, s)| st.oci(*s)).collect();
        println!("{}", serde_json::to_string(&docs)?);
    } else {
        println!(
            "{:<12} {:<8} {:<10} {:<40} {:<31} OWNER",
            "ID", "PID", "STATUS", "BUNDLE", "CREATED"
        );
        for (st, s) in &rows {
            let pid = if *s == Status::Stopped { 0 } else { st.pid };
            println!(
                "{:<12} {:<8} {:<10} {:<40} {:<31} {}",
                st.id,
                pid,
                s.to_string(),
                st.bundle.display(),
                st.created,
                if st.owner.is_empty() {
                    "root"
                } else {
                    &st.owner
                }
            );
        }
    }
    Ok(0)
}
