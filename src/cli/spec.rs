//! `lrun spec`: write a default config.json, as `runc spec` does.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use super::Globals;
use crate::config_template;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory to write config.json into.
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// A config for an unprivileged user (user namespace mapping the caller).
    #[arg(long = "rootless", id = "spec_rootless")]
    pub rootless: bool,
}

pub fn run(_g: &Globals, a: Args) -> Result<i32> {
    let path = a.bundle.join("config.json");
    if path.exists() {
        bail!("{} exists already: remove it first", path.display());
    }
    let mut spec = config_template::default_config();
    if a.rootless {
        config_template::make_rootless(&mut spec);
    }
    let text = serde_json::to_string_pretty(&spec)?;
    std::fs::write(&path, text + "\n").with_context(|| format!("write {}", path.display()))?;
    Ok(0)
}
