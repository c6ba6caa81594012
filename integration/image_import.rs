//! `lrun image import`: an OCI image layout built here (two tar layers, the second gzipped
//! with a whiteout and an opaque directory, plus an image config) becomes layer images and a
//! bundle; the container sees exactly the merged files, owners, links and devices, and runs
//! the image's process as its user. Needs root and mkfs.erofs.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{Env, lrun_with, ok};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn sha(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Tar {
        Tar(tar::Builder::new(Vec::new()))
    }

    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        path: &str,
        kind: tar::EntryType,
        mode: u32,
        owner: (u64, u64),
        data: &[u8],
        link: Option<&str>,
        dev: Option<(u32, u32)>,
    ) {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        if let Some((ma, mi)) = dev {
            h.set_device_major(ma).unwrap();
            h.set_device_minor(mi).unwrap();
        }
        self.0.append_data(&mut h, path, data).unwrap();
    }

    fn dir(&mut self, p: &str) {
        self.add(p, tar::EntryType::Directory, 0o755, (0, 0), b"", None, None);
    }

    fn file(&mut self, p: &str, data: &[u8]) {
        self.add(p, tar::EntryType::Regular, 0o644, (0, 0), data, None, None);
    }

    fn finish(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// Writes a blob and returns its descriptor.
fn blob(layout: &Path, media: &str, data: &[u8]) -> Value {
    let d = sha(data);
    let p = layout
        .join("blobs/sha256")
        .join(d.strip_prefix("sha256:").unwrap());
    fs::write(p, data).unwrap();
    json!({"mediaType": media, "digest": d, "size": data.len()})
}

const SCRIPT: &str = "id -u; id -g; pwd; echo $FOO; find /data /opt /etc /nodes | sort; \
    stat -c '%u:%g %a' /data/owned; stat -c '%F %t:%T' /nodes/null; \
    stat -c '%F' /data/fifo; stat -c '%i' /data/b /data/hl | uniq | wc -l; readlink /bin/sh";

/// The OCI layout under `dir`, image tagged "v1".
fn make_layout(dir: &Path) -> PathBuf {
    let layout = dir.join("oci");
    fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    // Layer 1, uncompressed: busybox, users, data, a hard link, a device, a fifo, an owner,
    // an xattr.
    let mut t = Tar::new();
    for d in [
        "bin", "etc", "data", "opt", "opt/keep", "nodes", "proc", "sys", "dev", "tmp",
    ] {
        t.dir(d);
    }
    let busybox = fs::read(
        ["/bin/busybox", "/usr/bin/busybox"]
            .iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox-static is required"),
    )
    .unwrap();
    t.add(
        "bin/busybox",
        tar::EntryType::Regular,
        0o755,
        (0, 0),
        &busybox,
        None,
        None,
    );
    for a in [
        "sh", "cat", "ls", "stat", "find", "sort", "id", "uniq", "wc", "readlink", "echo",
    ] {
        t.add(
            &format!("bin/{a}"),
            tar::EntryType::Symlink,
            0o777,
            (0, 0),
            b"",
            Some("busybox"),
            None,
        );
    }
    t.file(
        "etc/passwd",
        b"root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/data:/bin/sh\n",
    );
    t.file("etc/group", b"root:x:0:\napp:x:1001:\n");
    t.file("data/a", b"a\n");
    t.file("data/b", b"b\n");
    t.add(
        "data/owned",
        tar::EntryType::Regular,
        0o640,
        (123, 456),
        b"o\n",
        None,
        None,
    );
    t.add(
        "data/hl",
        tar::EntryType::Link,
        0o644,
        (0, 0),
        b"",
        Some("data/b"),
        None,
    );
    t.add(
        "nodes/null",
        tar::EntryType::Char,
        0o666,
        (0, 0),
        b"",
        None,
        Some((1, 3)),
    );
    t.add(
        "data/fifo",
        tar::EntryType::Fifo,
        0o600,
        (0, 0),
        b"",
        None,
        None,
    );
    t.0.append_pax_extensions([("SCHILY.xattr.user.lrun", b"yes".as_slice())])
        .unwrap();
    t.file("data/withx", b"x\n");
    t.file("opt/keep/x", b"x\n");
    let l1 = t.finish();
    // Layer 2, gzip: a whiteout, an opaque directory with a new file, new files.
    let mut t = Tar::new();
    t.dir("data");
    t.file("data/.wh.a", b"");
    t.dir("opt/keep");
    t.file("opt/keep/.wh..wh..opq", b"");
    t.file("opt/keep/y", b"y\n");
    t.file("etc/motd", b"hello\n");
    t.file("data/new", b"new\n");
    let l2_tar = t.finish();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&l2_tar).unwrap();
    let l2 = gz.finish().unwrap();

    let d1 = blob(&layout, "application/vnd.oci.image.layer.v1.tar", &l1);
    let d2 = blob(&layout, "application/vnd.oci.image.layer.v1.tar+gzip", &l2);
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {
            "Entrypoint": ["/bin/sh", "-c"], "Cmd": [SCRIPT],
            "Env": ["PATH=/bin", "FOO=bar"], "WorkingDir": "/data", "User": "app"
        },
        "rootfs": {"type": "layers", "diff_ids": [sha(&l1), sha(&l2_tar)]}
    });
    let cfg = blob(
        &layout,
        "application/vnd.oci.image.config.v1+json",
        config.to_string().as_bytes(),
    );
    let manifest = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": cfg, "layers": [d1, d2]
    });
    let mut md = blob(
        &layout,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
    md["annotations"] = json!({"org.opencontainers.image.ref.name": "v1"});
    fs::write(
        layout.join("index.json"),
        json!({"schemaVersion": 2, "manifests": [md]}).to_string(),
    )
    .unwrap();
    layout
}

fn getxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and buffer.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}

#[test]
fn imported_oci_image_runs_with_merged_files_and_its_config() {
    let mut env = Env::new();
    let layout = make_layout(&env.scratch);
    let store = env.scratch.join("store");
    let bundle = env.scratch.join("bundle");
    let spec = format!("{}:v1", layout.display());
    let out = ok(&lrun_with(
        &env,
        &store,
        &[
            "image",
            "import",
            &spec,
            "--name",
            "img",
            "--version",
            "1",
            "-o",
            bundle.to_str().unwrap(),
        ],
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("oci-layer@"), "{out}");
    assert!(lines[1].starts_with("img@1 sha256:"), "{out}");
    // The bundle carries the image config.
    let cfg: Value =
        serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["process"]["args"], json!(["/bin/sh", "-c", SCRIPT]));
    assert_eq!(cfg["process"]["env"], json!(["PATH=/bin", "FOO=bar"]));
    assert_eq!(cfg["process"]["cwd"], json!("/data"));
    assert_eq!(cfg["process"]["user"], json!({"uid": 1000, "gid": 1001}));
    assert_eq!(cfg["process"]["terminal"], json!(false));
    assert_eq!(cfg["annotations"]["org.lrun.layers"], json!("img@1"));
    // The two images in the store, the top depending on the lower one.
    let ls: Value =
        serde_json::from_str(&ok(&lrun_with(&env, &store, &["layer", "ls", "--json"]))).unwrap();
    let ls = ls.as_array().unwrap();
    assert_eq!(ls.len(), 2);
    let top = ls.iter().find(|l| l["name"] == "img").unwrap();
    assert_eq!(top["dependencies"], json!(1));

    let id = env.id("img");
    let out = lrun_with(
        &env,
        &store,
        &["run", "--bundle", bundle.to_str().unwrap(), &id],
    );
    let expected = "1000\n1001\n/data\nbar\n\
        /data\n/data/b\n/data/fifo\n/data/hl\n/data/new\n/data/owned\n/data/withx\n\
        /etc\n/etc/group\n/etc/motd\n/etc/passwd\n\
        /nodes\n/nodes/null\n\
        /opt\n/opt/keep\n/opt/keep/y\n\
        123:456 640\ncharacter special file 1:3\nfifo\n1\nbusybox\n";
    assert_eq!(ok(&out), expected);

    // The xattr survived (checked from the host through a created container's root).
    let id = env.id("imgx");
    let st = common::lrun_command()
        .arg("--root")
        .arg(&env.root)
        .arg("--store")
        .arg(&store)
        .args(["create", "--bundle", bundle.to_str().unwrap(), &id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    // The overlay exists in the container's mount namespace only: its root, through /proc.
    let pid = common::lrun_command()
        .arg("--root")
        .arg(&env.root)
        .args(["state", &id])
        .output()
        .unwrap();
    let pid = serde_json::from_slice::<Value>(&pid.stdout).unwrap()["pid"]
        .as_u64()
        .unwrap();
    let merged = PathBuf::from(format!("/proc/{pid}/root"));
    assert_eq!(
        getxattr(&merged.join("data/withx"), "user.lrun").as_deref(),
        Some(&b"yes"[..])
    );
    assert!(!merged.join("data/a").exists(), "whiteout ignored");
    assert!(
        !merged.join("opt/keep/x").exists(),
        "opaque directory ignored"
    );
    ok(&lrun_with(&env, &store, &["delete", "--force", &id]));

    // The same base layer imported with another image is the same lrun layer, reused from
    // the store, not converted again; the image's named User still resolves through the
    // reused layer's /etc/passwd and /etc/group.
    let bundle2 = env.scratch.join("bundle2");
    let out2 = ok(&lrun_with(
        &env,
        &store,
        &[
            "image",
            "import",
            &spec,
            "--name",
            "other",
            "--version",
            "2",
            "-o",
            bundle2.to_str().unwrap(),
        ],
    ));
    let first = out2.lines().next().unwrap_or_default();
    assert_eq!(
        first.strip_suffix(" reused"),
        lines[0].strip_suffix(" converted"),
        "{out2}"
    );
    let cfg2: Value =
        serde_json::from_slice(&fs::read(bundle2.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg2["process"]["user"], json!({"uid": 1000, "gid": 1001}));
    let ls: Value =
        serde_json::from_str(&ok(&lrun_with(&env, &store, &["layer", "ls", "--json"]))).unwrap();
    assert_eq!(ls.as_array().unwrap().len(), 3);
}

#[test]
fn corrupt_blob_and_missing_tag_are_refused() {
    let env = Env::new();
    let layout = make_layout(&env.scratch);
    let store = env.scratch.join("store");
    let out = lrun_with(
        &env,
        &store,
        &[
            "image",
            "import",
            &format!("{}:nope", layout.display()),
            "--name",
            "x",
            "--version",
            "1",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
    // Flip a byte of the gzip layer's blob.
    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap();
    let manifest: Value =
        serde_json::from_slice(&fs::read(layout.join("blobs/sha256").join(m)).unwrap()).unwrap();
    let l2 = manifest["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap();
    let p = layout.join("blobs/sha256").join(l2);
    let mut data = fs::read(&p).unwrap();
    let n = data.len();
    data[n - 9] ^= 0x01; // in the gzip trailer's CRC: decompression itself may not notice
    fs::write(&p, data).unwrap();
    let child = common::lrun_command()
        .arg("--store")
        .arg(&store)
        .args([
            "image",
            "import",
            layout.to_str().unwrap(),
            "--name",
            "x",
            "--version",
            "1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("does not match its digest"), "{err}");
    // No temp tree is left behind.
    for i in 0..2 {
        let t = std::env::temp_dir().join(format!("lrun-import-{i}-{pid}"));
        assert!(!t.exists(), "{} left", t.display());
    }
}
