//! A cache of compiled filters. libseccomp needs ~20 ms to compile a three-architecture
//! default profile, more than the rest of a container start; engines send the same profile
//! every time, so lrun compiles it once and keeps the BPF program in its root directory.
//!
//! A cache file holds the complete key, not only its hash: a hit is a byte-for-byte match of
//! the key, so a hash collision can never load another profile's filter. The key is the
//! profile as JSON plus all that can change its compilation without changing the profile:
//! lrun's and libseccomp's versions, the kernel release (libseccomp probes the kernel's
//! actions), and the number libseccomp resolves each syscall name to (distributions update
//! libseccomp's syscall tables without changing its version).

use std::fs;
use std::hash::Hasher;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{Context, Result};
use libseccomp::{ScmpSyscall, ScmpVersion};
use oci_spec::runtime::LinuxSeccomp;

/// Past this many files the cache is emptied before adding one: profiles that differ per
/// container must not fill the disk.
const MAX_ENTRIES: usize = 64;

const MAGIC: &[u8; 8] = b"lrunbpf1";

pub(super) fn key(s: &LinuxSeccomp) -> Result<Vec<u8>> {
    let mut key = Vec::with_capacity(16 * 1024);
    let version = ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_default();
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    writeln!(
        key,
        "lrun {} libseccomp {version} kernel {kernel}",
        env!("CARGO_PKG_VERSION")
    )?;
    serde_json::to_writer(&mut key, s).context("serialize linux.seccomp")?;
    key.push(b'\n');
    for name in s.syscalls().iter().flatten().flat_map(|sc| sc.names()) {
        let nr = ScmpSyscall::from_name(name).map_or(i32::MIN, i32::from);
        key.extend_from_slice(&nr.to_le_bytes());
    }
    Ok(key)
}

fn file_name(key: &[u8]) -> String {
    // FNV-1a: only spreads keys over file names; equality is checked on the full key.
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    h.write(key);
    format!("{:016x}.bpf", h.finish())
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The cached program bytes for `key`, if present and intact.
pub(super) fn lookup(dir: &Path, key: &[u8]) -> Option<Vec<u8>> {
    let data = fs::read(dir.join(file_name(key))).ok()?;
    let rest = data.strip_prefix(MAGIC.as_slice())?;
    let (len, rest) = rest.split_first_chunk::<8>()?;
    let len = usize::try_from(u64::from_le_bytes(*len)).ok()?;
    if rest.len() < len || &rest[..len] != key {
        return None;
    }
    Some(rest[len..].to_vec())
}

/// Store `program` under `key`. The file appears whole or not at all (written aside, then
/// renamed), so a concurrent `create` never reads half a program.
pub(super) fn store(dir: &Path, key: &[u8], program: &[u8]) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("create {}", dir.display()))?;
    // Root's only, also when an older lrun made it with the umask's mode.
    fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .with_context(|| format!("chmod {}", dir.display()))?;
    trim(dir);
    let name = file_name(key);
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(MAGIC)?;
        f.write_all(&(key.len() as u64).to_le_bytes())?;
        f.write_all(key)?;
        f.write_all(program)?;
        fs::rename(&tmp, &path)
    };
    write()
        .inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
        .with_context(|| format!("write {}", path.display()))
}

fn trim(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    if files.len() >= MAX_ENTRIES {
        for f in files {
            let _ = fs::remove_file(f);
        }
    }
}
