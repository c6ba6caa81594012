//! The layer image header: a fixed binary layout in front of the filesystem payload, readable
//! without mounting (runtime-spec/layers.md "Image format" is the normative description).

use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use sha2::{Digest as _, Sha256};

pub const MAGIC: [u8; 8] = *b"LRUNLAYR";
pub const FORMAT_VERSION: u32 = 1;
/// Header and payload alignment: the loop driver and erofs `fsoffset` both want page-aligned
/// offsets, and 4096 is the largest page size we care about for offsets on x86/arm64 images.
pub const ALIGN: u64 = 4096;
/// Bytes of the fixed part; the dependency table follows.
pub const FIXED_LEN: usize = 256;
pub const DEP_LEN: usize = 160;
pub const NAME_MAX: usize = 64;
pub const VERSION_MAX: usize = 64;
/// overlayfs refuses more than 500 lower layers, so no closure (and no dependency list) can
/// usefully be longer.
pub const MAX_LAYERS: usize = 500;
/// Extension of layer image files.
pub const EXTENSION: &str = "lrl";

// Field offsets in the fixed part.
const OFF_VERSION: usize = 8;
const OFF_HEADER_LEN: usize = 12;
const OFF_HEADER_DIGEST: usize = 16;
const OFF_FS: usize = 48;
const OFF_NDEPS: usize = 52;
const OFF_PAYLOAD_OFF: usize = 56;
const OFF_PAYLOAD_LEN: usize = 64;
const OFF_PAYLOAD_DIGEST: usize = 72;
const OFF_NAME: usize = 104;
const OFF_LVERSION: usize = 168;
const OFF_RESERVED: usize = 232;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn of(data: &[u8]) -> Digest {
        Digest(Sha256::digest(data).into())
    }

    pub fn hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        s
    }

    /// Parse 64 lowercase or uppercase hex digits, optionally prefixed with `sha256:`.
    pub fn parse(s: &str) -> Result<Digest> {
        let h = s.strip_prefix("sha256:").unwrap_or(s);
        if h.len() != 64 {
            bail!("digest {s:?}: expected 64 hex digits");
        }
        let mut out = [0u8; 32];
        for (i, pair) in h.as_bytes().chunks(2).enumerate() {
            let hi = hex_val(pair[0]);
            let lo = hex_val(pair[1]);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out[i] = (hi << 4) | lo,
                _ => bail!("digest {s:?}: not hexadecimal"),
            }
        }
        Ok(Digest(out))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", &self.hex()[..12])
    }
}

/// The filesystem inside the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsType {
    Squashfs,
    Erofs,
}

impl FsType {
    fn code(self) -> u8 {
        match self {
            FsType::Squashfs => 1,
            FsType::Erofs => 2,
        }
    }

    fn from_code(c: u8) -> Result<FsType> {
        match c {
            1 => Ok(FsType::Squashfs),
            2 => Ok(FsType::Erofs),
            _ => bail!("unknown filesystem type code {c} (1 = squashfs, 2 = erofs)"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FsType::Squashfs => "squashfs",
            FsType::Erofs => "erofs",
        }
    }

    pub fn parse(s: &str) -> Result<FsType> {
        match s {
            "squashfs" => Ok(FsType::Squashfs),
            "erofs" => Ok(FsType::Erofs),
            _ => bail!("unknown filesystem type {s:?} (squashfs or erofs)"),
        }
    }

    /// Check the payload's first bytes carry this filesystem's superblock magic, so a
    /// mislabelled payload is refused before the kernel is asked to mount it.
    pub fn check_magic(self, first: &[u8]) -> Result<()> {
        let ok = match self {
            // squashfs: "hsqs" at byte 0.
            FsType::Squashfs => first.get(0..4) == Some(b"hsqs"),
            // erofs: 0xE0F5E1E2 little-endian at byte 1024.
            FsType::Erofs => first.get(1024..1028) == Some(&0xE0F5_E1E2u32.to_le_bytes()),
        };
        if !ok {
            bail!(
                "payload is not a {} filesystem (no superblock magic)",
                self.name()
            );
        }
        Ok(())
    }

    /// Bytes of payload `check_magic` needs.
    pub const MAGIC_PROBE: usize = 1028;
}

/// One dependency: the exact layer (by digest) this one must be stacked above.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dep {
    pub name: String,
    pub version: String,
    pub digest: Digest,
}

/// A decoded header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub version: String,
    pub fs: FsType,
    pub payload_offset: u64,
    pub payload_len: u64,
    pub payload_digest: Digest,
    pub deps: Vec<Dep>,
}

/// Names and versions become file names in the store index: keep them to a safe alphabet.
pub fn check_label(what: &str, s: &str, max: usize) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._+-".contains(&c))
        && !s.starts_with('.');
    if !ok {
        bail!(
            "{what} {s:?}: use 1-{max} letters, digits, '.', '_', '+', '-' (not starting with '.')"
        );
    }
    Ok(())
}

/// Header length (a multiple of ALIGN) for a given number of dependencies.
pub fn header_len_for(ndeps: usize) -> u64 {
    let raw = (FIXED_LEN + ndeps * DEP_LEN) as u64;
    raw.div_ceil(ALIGN) * ALIGN
}

fn put_label(buf: &mut [u8], s: &str) {
    buf[..s.len()].copy_from_slice(s.as_bytes());
}

fn get_label(what: &str, buf: &[u8], max: usize) -> Result<String> {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    if buf[end..].iter().any(|&b| b != 0) {
        bail!("{what}: bytes after the terminating NUL");
    }
    let s = std::str::from_utf8(&buf[..end])
        .map_err(|_| anyhow::anyhow!("{what}: not UTF-8"))?
        .to_string();
    check_label(what, &s, max)?;
    Ok(s)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

fn digest_at(b: &[u8], off: usize) -> Digest {
    let mut a = [0u8; 32];
    a.copy_from_slice(&b[off..off + 32]);
    Digest(a)
}

impl Header {
    /// Encode; returns the header bytes and the layer digest (the header's own checksum).
    pub fn encode(&self) -> Result<(Vec<u8>, Digest)> {
        check_label("layer name", &self.name, NAME_MAX)?;
        check_label("layer version", &self.version, VERSION_MAX)?;
        if self.deps.len() > MAX_LAYERS {
            bail!(
                "{} dependencies: at most {MAX_LAYERS} are allowed",
                self.deps.len()
            );
        }
        let len = header_len_for(self.deps.len());
        if self.payload_offset < len || !self.payload_offset.is_multiple_of(ALIGN) {
            bail!(
                "payload offset {} must be a multiple of {ALIGN} and at least the header length {len}",
                self.payload_offset
            );
        }
        let mut b = vec![0u8; len as usize];
        b[0..8].copy_from_slice(&MAGIC);
        b[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[OFF_HEADER_LEN..OFF_HEADER_LEN + 4].copy_from_slice(&(len as u32).to_le_bytes());
        b[OFF_FS] = self.fs.code();
        b[OFF_NDEPS..OFF_NDEPS + 4].copy_from_slice(&(self.deps.len() as u32).to_le_bytes());
        b[OFF_PAYLOAD_OFF..OFF_PAYLOAD_OFF + 8].copy_from_slice(&self.payload_offset.to_le_bytes());
        b[OFF_PAYLOAD_LEN..OFF_PAYLOAD_LEN + 8].copy_from_slice(&self.payload_len.to_le_bytes());
        b[OFF_PAYLOAD_DIGEST..OFF_PAYLOAD_DIGEST + 32].copy_from_slice(&self.payload_digest.0);
        put_label(&mut b[OFF_NAME..OFF_NAME + NAME_MAX], &self.name);
        put_label(
            &mut b[OFF_LVERSION..OFF_LVERSION + VERSION_MAX],
            &self.version,
        );
        for (i, d) in self.deps.iter().enumerate() {
            check_label("dependency name", &d.name, NAME_MAX)?;
            check_label("dependency version", &d.version, VERSION_MAX)?;
            let o = FIXED_LEN + i * DEP_LEN;
            put_label(&mut b[o..o + NAME_MAX], &d.name);
            put_label(&mut b[o + 64..o + 64 + VERSION_MAX], &d.version);
            b[o + 128..o + 160].copy_from_slice(&d.digest.0);
        }
        let digest = Digest::of(&b);
        b[OFF_HEADER_DIGEST..OFF_HEADER_DIGEST + 32].copy_from_slice(&digest.0);
        Ok((b, digest))
    }

    /// Decode and check a header. `first` holds at least the first 4096 bytes of the file (or
    /// the whole file if shorter); `rest` is called for the remainder when the dependency
    /// table makes the header longer than that. `file_len` is the image file's size.
    pub fn decode(first: &[u8], file_len: u64) -> Result<(Header, Digest)> {
        Self::decode_with(first, file_len, |_, _| bail!("header longer than provided"))
    }

    fn decode_with(
        first: &[u8],
        file_len: u64,
        mut more: impl FnMut(usize, &mut [u8]) -> Result<()>,
    ) -> Result<(Header, Digest)> {
        if first.len() < FIXED_LEN {
            bail!(
                "truncated: {} bytes, a layer header needs at least {}",
                first.len(),
                ALIGN
            );
        }
        if first[0..8] != MAGIC {
            bail!("not an lrun layer image (wrong magic)");
        }
        let version = u32_at(first, OFF_VERSION);
        if version != FORMAT_VERSION {
            bail!(
                "layer format version {version} is not supported (this lrun reads {FORMAT_VERSION})"
            );
        }
        let hlen = u64::from(u32_at(first, OFF_HEADER_LEN));
        let ndeps = u32_at(first, OFF_NDEPS) as usize;
        if ndeps > MAX_LAYERS {
            bail!("header declares {ndeps} dependencies, at most {MAX_LAYERS} are allowed");
        }
        if hlen != header_len_for(ndeps) {
            bail!("header length {hlen} does not match its {ndeps} dependencies");
        }
        if hlen > file_len {
            bail!("truncated: the header needs {hlen} bytes, the file has {file_len}");
        }
        let mut owned;
        let b: &[u8] = if (hlen as usize) <= first.len() {
            &first[..hlen as usize]
        } else {
            owned = vec![0u8; hlen as usize];
            owned[..first.len()].copy_from_slice(first);
            let have = first.len();
            more(have, &mut owned[have..])?;
            &owned
        };
        let stored = digest_at(b, OFF_HEADER_DIGEST);
        let mut zeroed = b.to_vec();
        zeroed[OFF_HEADER_DIGEST..OFF_HEADER_DIGEST + 32].fill(0);
        let actual = Digest::of(&zeroed);
        if actual != stored {
            bail!("header checksum mismatch: the header is corrupt");
        }
        if b[OFF_FS + 1..OFF_NDEPS].iter().any(|&x| x != 0)
            || b[OFF_RESERVED..FIXED_LEN].iter().any(|&x| x != 0)
        {
            bail!("reserved header bytes are not zero (written by a newer lrun?)");
        }
        let fs = FsType::from_code(b[OFF_FS])?;
        let payload_offset = u64_at(b, OFF_PAYLOAD_OFF);
        let payload_len = u64_at(b, OFF_PAYLOAD_LEN);
        if !payload_offset.is_multiple_of(ALIGN) || payload_offset < hlen {
            bail!(
                "payload offset {payload_offset} must be a multiple of {ALIGN} and not inside the {hlen}-byte header"
            );
        }
        if payload_len == 0 {
            bail!("payload is empty");
        }
        match payload_offset.checked_add(payload_len) {
            Some(end) if end == file_len => {}
            Some(end) if end < file_len => bail!(
                "file has {} bytes after the payload (offset {payload_offset} + length {payload_len} < {file_len})",
                file_len - end
            ),
            _ => bail!(
                "payload (offset {payload_offset}, length {payload_len}) extends past the end of the {file_len}-byte file: truncated?"
            ),
        }
        let name = get_label("layer name", &b[OFF_NAME..OFF_NAME + NAME_MAX], NAME_MAX)?;
        let lversion = get_label(
            "layer version",
            &b[OFF_LVERSION..OFF_LVERSION + VERSION_MAX],
            VERSION_MAX,
        )?;
        let mut deps = Vec::with_capacity(ndeps);
        for i in 0..ndeps {
            let o = FIXED_LEN + i * DEP_LEN;
            deps.push(Dep {
                name: get_label("dependency name", &b[o..o + 64], NAME_MAX)?,
                version: get_label("dependency version", &b[o + 64..o + 128], VERSION_MAX)?,
                digest: digest_at(b, o + 128),
            });
        }
        if b[FIXED_LEN + ndeps * DEP_LEN..].iter().any(|&x| x != 0) {
            bail!("header padding is not zero");
        }
        let h = Header {
            name,
            version: lversion,
            fs,
            payload_offset,
            payload_len,
            payload_digest: digest_at(b, OFF_PAYLOAD_DIGEST),
            deps,
        };
        Ok((h, stored))
    }

    /// `name@version`
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// Read and check the header of an image file. Cost: one or two reads and one SHA-256 of the
/// header, so it is fine on the container start path.
pub fn read_header(path: &Path) -> Result<(Header, Digest)> {
    let f = open_regular(path).with_context(|| format!("open {}", path.display()))?;
    read_header_from(&f).with_context(|| format!("layer image {}", path.display()))
}

/// Reads at absolute offsets, so the file position (e.g. after writing a copy) does not matter.
pub fn read_header_from(f: &File) -> Result<(Header, Digest)> {
    let file_len = f.metadata().context("fstat")?.len();
    read_header_at_len(f, file_len)
}

/// `read_header_from` for a caller that has just fstat'ed `f` (the store's ownership check):
/// `file_len` is its size.
pub fn read_header_at_len(f: &File, file_len: u64) -> Result<(Header, Digest)> {
    let mut first = vec![0u8; ALIGN as usize];
    let mut got = 0;
    while got < first.len() {
        let n = f
            .read_at(&mut first[got..], got as u64)
            .context("read header")?;
        if n == 0 {
            break;
        }
        got += n;
    }
    first.truncate(got);
    Header::decode_with(&first, file_len, |at, rest| {
        f.read_exact_at(rest, at as u64).context("read header")
    })
}

/// Open `path` for reading only if it is a regular file (symlinks followed). Layer files come
/// from users and sources: a FIFO would block open(2) and read(2) forever and a device such as
/// /dev/zero reads without end, so the open is non-blocking and the kind is checked with fstat
/// on the opened file (not a second lookup) before anything is read.
pub fn open_regular(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)?;
    let t = f.metadata()?.file_type();
    if !t.is_file() {
        let kind = if t.is_fifo() {
            "a fifo"
        } else if t.is_char_device() {
            "a character device"
        } else if t.is_block_device() {
            "a block device"
        } else if t.is_dir() {
            "a directory"
        } else if t.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("not a regular file ({kind})"),
        ));
    }
    // Back to blocking reads: O_NONBLOCK only had to get the open past a FIFO.
    rustix::fs::fcntl_setfl(&f, rustix::fs::OFlags::empty())?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_regular_refuses_devices_and_fifos_without_blocking() {
        let dir = std::env::temp_dir().join(format!("lrun-open-regular-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = open_regular(&fifo).unwrap_err();
        assert!(e.to_string().contains("a fifo"), "{e}");
        let e = open_regular(Path::new("/dev/zero")).unwrap_err();
        assert!(e.to_string().contains("a character device"), "{e}");
        let e = open_regular(&dir).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        let file = dir.join("file");
        std::fs::write(&file, b"x").unwrap();
        let f = open_regular(&file).unwrap();
        // Blocking mode again: O_NONBLOCK was only for the open.
        let fl = rustix::fs::fcntl_getfl(&f).unwrap();
        assert!(!fl.contains(rustix::fs::OFlags::NONBLOCK));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn sample(ndeps: usize) -> Header {
        Header {
            name: "base".into(),
            version: "953bc".into(),
            fs: FsType::Erofs,
            payload_offset: header_len_for(ndeps),
            payload_len: 8192,
            payload_digest: Digest::of(b"payload"),
            deps: (0..ndeps)
                .map(|i| Dep {
                    name: format!("dep{i}"),
                    version: "1.0".into(),
                    digest: Digest::of(format!("d{i}").as_bytes()),
                })
                .collect(),
        }
    }

    fn file_len(h: &Header) -> u64 {
        h.payload_offset + h.payload_len
    }

    #[test]
    fn round_trip_keeps_every_field() {
        for n in [0, 1, 24, 25, 100] {
            let h = sample(n);
            let (bytes, digest) = h.encode().unwrap();
            assert_eq!(bytes.len() as u64 % ALIGN, 0);
            let (back, d2) = Header::decode(&bytes, file_len(&h)).unwrap();
            assert_eq!(back, h);
            assert_eq!(d2, digest);
        }
    }

    #[test]
    fn twenty_four_deps_fit_one_page() {
        assert_eq!(header_len_for(24), 4096);
        assert_eq!(header_len_for(25), 8192);
    }

    #[test]
    fn encoding_is_deterministic_and_digest_depends_on_content() {
        let a = sample(2).encode().unwrap();
        assert_eq!(a, sample(2).encode().unwrap());
        let mut h = sample(2);
        h.version = "953bd".into();
        assert_ne!(h.encode().unwrap().1, a.1);
    }

    #[test]
    fn truncated_header_is_rejected() {
        let h = sample(0);
        let (bytes, _) = h.encode().unwrap();
        let err = format!("{:#}", Header::decode(&bytes[..100], 100).unwrap_err());
        assert!(err.contains("truncated"), "{err}");
        let err = format!("{:#}", Header::decode(&bytes, 2000).unwrap_err());
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn wrong_magic_is_rejected() {
        let h = sample(0);
        let (mut bytes, _) = h.encode().unwrap();
        bytes[0] = b'X';
        let err = format!("{:#}", Header::decode(&bytes, file_len(&h)).unwrap_err());
        assert!(err.contains("wrong magic"), "{err}");
    }

    #[test]
    fn flipped_bit_fails_header_checksum() {
        let h = sample(1);
        let (bytes, _) = h.encode().unwrap();
        for pos in [OFF_NAME, OFF_PAYLOAD_DIGEST + 3, FIXED_LEN + 130, 4000] {
            let mut b = bytes.clone();
            b[pos] ^= 1;
            let err = format!("{:#}", Header::decode(&b, file_len(&h)).unwrap_err());
            assert!(err.contains("checksum"), "pos {pos}: {err}");
        }
    }

    #[test]
    fn payload_outside_file_is_rejected() {
        let h = sample(0);
        let (bytes, _) = h.encode().unwrap();
        let err = format!(
            "{:#}",
            Header::decode(&bytes, file_len(&h) - 1).unwrap_err()
        );
        assert!(err.contains("past the end"), "{err}");
        let err = format!(
            "{:#}",
            Header::decode(&bytes, file_len(&h) + 5).unwrap_err()
        );
        assert!(err.contains("after the payload"), "{err}");
        let mut h2 = sample(0);
        h2.payload_len = u64::MAX - 10;
        let (bytes, _) = h2.encode().unwrap();
        let err = format!("{:#}", Header::decode(&bytes, 1 << 20).unwrap_err());
        assert!(err.contains("past the end"), "{err}");
    }

    #[test]
    fn misaligned_offset_cannot_be_encoded() {
        let mut h = sample(0);
        h.payload_offset = 4097;
        assert!(h.encode().is_err());
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in ["", "a/b", ".hidden", "x y", &"n".repeat(65)] {
            let mut h = sample(0);
            h.name = bad.to_string();
            assert!(h.encode().is_err(), "{bad:?}");
        }
        let mut h = sample(0);
        h.version = "f".repeat(64);
        assert!(h.encode().is_ok());
    }

    #[test]
    fn digest_text_round_trips() {
        let d = Digest::of(b"x");
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        assert_eq!(Digest::parse(&d.hex().to_uppercase()).unwrap(), d);
        assert!(Digest::parse("sha256:zz").is_err());
    }

    #[test]
    fn fs_magic_is_checked() {
        let mut e = vec![0u8; 2048];
        e[1024..1028].copy_from_slice(&0xE0F5_E1E2u32.to_le_bytes());
        assert!(FsType::Erofs.check_magic(&e).is_ok());
        assert!(FsType::Squashfs.check_magic(&e).is_err());
        assert!(FsType::Squashfs.check_magic(b"hsqs....").is_ok());
        assert!(FsType::Erofs.check_magic(b"hsqs").is_err());
    }
}
