//! linux.seccomp: compile the filter and load it. STUB: filled in by the seccomp work (issue 4).

use anyhow::Result;
use oci_spec::runtime::LinuxSeccomp;

/// Load the filter into the calling process (the container init, just before exec).
pub fn install(_seccomp: &LinuxSeccomp) -> Result<()> {
    crate::logging::warn("linux.seccomp is not enforced yet");
    Ok(())
}

/// Check a profile before anything is created.
pub fn validate(_seccomp: &LinuxSeccomp) -> Result<()> {
    Ok(())
}
