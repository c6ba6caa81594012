//! `lrun list`: a table, or JSON with `--format json`.

use std::io::Write;

use super::Globals;
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
    let rows = crate::container::list(&g.runtime())?;
    // One write for the whole table: stdout is line-buffered, a write per container otherwise.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if a.quiet {
        for (st, _) in &rows {
            writeln!(out, "{}", st.id)?;
        }
    } else if a.format == "json" {
        let docs: Vec<_> = rows.iter().map(|(st, s)| st.oci(*s)).collect();
        writeln!(out, "{}", serde_json::to_string(&docs)?)?;
    } else {
        writeln!(
            out,
            "{:<12} {:<8} {:<10} {:<40} {:<31} OWNER",
            "ID", "PID", "STATUS", "BUNDLE", "CREATED"
        )?;
        for (st, s) in &rows {
            let pid = if *s == Status::Stopped { 0 } else { st.pid };
            writeln!(
                out,
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
            )?;
        }
    }
    out.flush()?;
    Ok(0)
}
