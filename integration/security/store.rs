//! The node store and layer pulls (review items 6 and 10): the store owns what it stores
//! (root-owned read-only copies, never links to a caller's file; damage is reported and
//! removable), and every read of a layer source is bounded (declared sizes, stall timeout,
//! deadline, regular files only).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Env, lrun_with, ok, pack_tree};

const NOBODY: u32 = 65534;
const ORIGINAL: &[u8] = b"ORIGINAL-CONTENT-the-store-verified-0123456789";
const EVIL: &[u8] = b"EVIL!!!!-CONTENT-the-owner-wrote-in-0123456789";

/// Pack a layer from `files` (path, content) with optional dependencies.
fn pack(env: &Env, name: &str, files: &[(&str, &[u8])], deps: &[&Path]) -> PathBuf {
    let tree = env.scratch.join(format!("tree-{name}"));
    for (p, c) in files {
        let f = tree.join(p);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::write(f, c).unwrap();
    }
    fs::create_dir_all(&tree).unwrap();
    pack_tree(env, &tree, name, deps)
}

/// A base layer with busybox, to run containers on.
fn base(env: &Env) -> PathBuf {
    let out = env.scratch.join("base.lrl");
    ok(&lrun_with(
        env,
        &env.scratch.join("unused-store"),
        &[
            "layer",
            "pack",
            crate::common::rootfs().to_str().unwrap(),
            "--name",
            "base",
            "--version",
            "1",
            "-o",
            out.to_str().unwrap(),
        ],
    ));
    out
}

fn digest(file: &Path) -> String {
    let out = crate::common::lrun_command()
        .args(["layer", "inspect", "--json", file.to_str().unwrap()])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["digest"].as_str().unwrap().to_string()
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap()
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("content stored uncompressed in the image")
}

/// Run as the unprivileged `nobody`, as a local user owning the file would.
fn as_nobody(cmd: &str, args: &[&str], stdin: &[u8]) -> std::process::ExitStatus {
    let mut c = Command::new(cmd)
        .args(args)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(stdin).unwrap();
    c.wait().unwrap()
}

/// A file big enough to get data blocks of its own (a small one is inlined next to erofs
/// metadata, which the kernel checks), starting with `marker`.
fn payload_file(marker: &[u8]) -> Vec<u8> {
    let mut v = marker.to_vec();
    v.resize(64 << 10, b'.');
    v
}

/// The first bytes of /f, as a container whose root is `top@1` over base reads them.
fn head_in_container(env: &mut Env, store: &Path, top: &str) -> String {
    let n = ORIGINAL.len().to_string();
    let mut b = env.bundle("store", &["head", "-c", &n, "/f"]);
    b.config["root"] = json!({"path": "rootfs", "readonly": true});
    b.config["annotations"] = json!({"org.lrun.layers": format!("{top}@1")});
    b.write();
    let id = env.id("store");
    ok(&lrun_with(env, store, &["run", "--bundle", b.path(), &id]))
}

/// Run lrun; kill it (by its own pid) if it has not ended after `limit`. Returns its output and
/// whether it ended by itself, and how long it took.
fn lrun_bounded(env: &Env, store: &Path, args: &[&str], limit: Duration) -> (Output, bool, f64) {
    let t = Instant::now();
    let mut child = env
        .lrun()
        .arg("--store")
        .arg(store)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ended = true;
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > limit {
            let _ = child.kill();
            ended = false;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (
        child.wait_with_output().unwrap(),
        ended,
        t.elapsed().as_secs_f64(),
    )
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn partial_files(store: &Path) -> Vec<String> {
    fs::read_dir(store.join("partial"))
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".partial"))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Item 6: the store owns what it stores.

/// A `nobody`-owned image is added by root; its owner then rewrites a file's bytes inside the
/// payload in place, and copies another image over it. Containers still get the content the
/// store verified, and the store still verifies.
#[test]
fn owner_rewriting_an_added_image_does_not_change_what_containers_get() {
    let mut env = Env::new();
    let store = env.scratch.join("store");
    let base = base(&env);
    let app = pack(&env, "app", &[("f", &payload_file(ORIGINAL))], &[&base]);
    let other = pack(&env, "other", &[("f", b"other")], &[&base]);
    for f in [&app, &other] {
        std::os::unix::fs::chown(f, Some(NOBODY), Some(NOBODY)).unwrap();
        fs::set_permissions(f, fs::Permissions::from_mode(0o644)).unwrap();
    }
    ok(&lrun_with(
        &env,
        &store,
        &[
            "layer",
            "add",
            base.to_str().unwrap(),
            app.to_str().unwrap(),
        ],
    ));
    assert_eq!(
        head_in_container(&mut env, &store, "app").as_bytes(),
        ORIGINAL
    );

    // The attack: the file's owner patches the payload in place (same length, so the header's
    // sizes still hold and only the payload digest, checked once on import, would notice).
    let off = find(&fs::read(&app).unwrap(), ORIGINAL);
    let st = as_nobody(
        "dd",
        &[
            &format!("of={}", app.display()),
            "bs=1",
            &format!("seek={off}"),
            "conv=notrunc",
        ],
        EVIL,
    );
    assert!(st.success(), "nobody could not write its own file");
    assert_eq!(find(&fs::read(&app).unwrap(), EVIL), off);
    assert_eq!(
        head_in_container(&mut env, &store, "app").as_bytes(),
        ORIGINAL,
        "the owner's in-place write reached the stored image"
    );
    // cp over the added file (O_TRUNC, same inode): the store's copy is not that inode.
    assert!(as_nobody("cp", &[other.to_str().unwrap(), app.to_str().unwrap()], b"").success());
    assert_eq!(
        head_in_container(&mut env, &store, "app").as_bytes(),
        ORIGINAL
    );
    let out = lrun_with(&env, &store, &["layer", "verify"]);
    assert!(out.status.success(), "verify: {}", stderr(&out));
    let ls = ok(&lrun_with(&env, &store, &["layer", "ls"]));
    assert!(!ls.contains("DAMAGED"), "{ls}");
}

/// After `add` (and a pull), the store holds root-owned, read-only, single-link regular files,
/// in directories only root can enter; a FIFO passed as an image is refused at once.
#[test]
fn stored_images_are_root_owned_read_only_copies_never_links() {
    let env = Env::new();
    let store = env.scratch.join("store");
    let img = pack(&env, "solo", &[("f", ORIGINAL)], &[]);
    std::os::unix::fs::chown(&img, Some(NOBODY), Some(NOBODY)).unwrap();
    fs::set_permissions(&img, fs::Permissions::from_mode(0o666)).unwrap();
    // Through a symlink, as a bundle or a careless admin might name it.
    let link = env.scratch.join("link.lrl");
    std::os::unix::fs::symlink(&img, &link).unwrap();
    ok(&lrun_with(
        &env,
        &store,
        &["layer", "add", link.to_str().unwrap()],
    ));
    let d = digest(&img);
    let stored = store.join(format!("layers/sha256/{}.lrl", hex(&d)));
    let m = fs::symlink_metadata(&stored).unwrap();
    assert!(
        m.file_type().is_file(),
        "stored image is not a regular file"
    );
    assert_eq!(m.nlink(), 1, "stored image shares its inode");
    assert_eq!(
        fs::metadata(&img).unwrap().nlink(),
        1,
        "caller's file was linked"
    );
    assert_ne!(m.ino(), fs::metadata(&img).unwrap().ino());
    assert_eq!((m.uid(), m.gid()), (0, 0));
    assert_eq!(
        m.mode() & 0o7222,
        0,
        "stored image is writable: {:o}",
        m.mode()
    );

    // A pulled image: the same, and so is everything the store made.
    let src = env.scratch.join("source");
    let other = pack(&env, "pulled", &[("f", b"pulled")], &[]);
    ok(&lrun_with(
        &env,
        &store,
        &[
            "layer",
            "publish",
            src.to_str().unwrap(),
            other.to_str().unwrap(),
        ],
    ));
    // Into the store that has the added image, and into a new one the pull creates.
    let fresh = env.scratch.join("fresh-store");
    for st in [&store, &fresh] {
        ok(&lrun_with(
            &env,
            st,
            &["layer", "pull", src.to_str().unwrap(), "pulled@1"],
        ));
        for dir in ["", "layers", "layers/sha256", "names", "tmp", "partial"] {
            let m = fs::symlink_metadata(st.join(dir)).unwrap();
            assert!(m.is_dir());
            assert_eq!(m.uid(), 0);
            let mode = m.mode() & 0o7777;
            assert_eq!(mode & 0o077, 0, "{dir}/ has mode {mode:o}");
        }
        assert_eq!(fs::metadata(st.join("lock")).unwrap().mode() & 0o077, 0);
        for e in fs::read_dir(st.join("layers/sha256")).unwrap() {
            let m = fs::symlink_metadata(e.unwrap().path()).unwrap();
            assert!(m.file_type().is_file());
            assert_eq!((m.nlink(), m.uid(), m.mode() & 0o7222), (1, 0, 0));
        }
    }

    // A FIFO named as an image: refused at once, not a hang in open(2).
    let fifo = env.scratch.join("fifo.lrl");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let (out, ended, _) = lrun_bounded(
        &env,
        &store,
        &["layer", "add", fifo.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert!(ended, "layer add of a FIFO hung");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a regular file"),
        "{}",
        stderr(&out)
    );
}

/// Stored images damaged from outside (a payload byte, a different file copied over one, a
/// foreign owner): `verify` names each on one line, `ls` shows them without failing, a
/// container refuses the foreign one, `rm --force` and `gc` remove them.
#[test]
fn damaged_stored_images_are_reported_and_removable() {
    let mut env = Env::new();
    let store = env.scratch.join("store");
    let base = base(&env);
    let a = pack(&env, "a", &[("f", ORIGINAL)], &[&base]);
    let b = pack(&env, "b", &[("f", b"b")], &[&base]);
    let c = pack(&env, "c", &[("f", b"c")], &[&base]);
    let files = [&base, &a, &b, &c].map(|p| p.to_str().unwrap().to_string());
    let mut args = vec!["layer", "add"];
    args.extend(files.iter().map(String::as_str));
    ok(&lrun_with(&env, &store, &args));
    let stored = |f: &Path| store.join(format!("layers/sha256/{}.lrl", hex(&digest(f))));
    let (sa, sb, sc) = (stored(&a), stored(&b), stored(&c));
    // Outside writes, as root would make them (the files are read-only, root ignores that).
    let mut bytes = fs::read(&sa).unwrap();
    let off = find(&bytes, ORIGINAL);
    bytes[off] ^= 0xff;
    fs::OpenOptions::new()
        .write(true)
        .open(&sa)
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    fs::write(&sb, fs::read(&c).unwrap()).unwrap();
    std::os::unix::fs::chown(&sc, Some(NOBODY), None).unwrap();

    let out = lrun_with(&env, &store, &["layer", "verify"]);
    assert!(!out.status.success(), "verify passed a damaged store");
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    for (p, why) in [
        (&sa, "payload digest mismatch"),
        (&sb, "digest"),
        (&sc, "owned by uid 65534"),
    ] {
        let name = p.to_str().unwrap();
        assert!(
            lines.iter().any(|l| l.contains(name) && l.contains(why)),
            "no line for {name} ({why}): {err}"
        );
    }
    let ls = lrun_with(&env, &store, &["layer", "ls"]);
    let listing = ok(&ls);
    assert_eq!(listing.matches("DAMAGED").count(), 2, "{listing}");
    assert!(listing.contains("base"), "{listing}");

    // A container on the foreign image is refused with one line that says why.
    let mut bundle = env.bundle("damaged", &["cat", "/f"]);
    bundle.config["root"] = json!({"path": "rootfs", "readonly": true});
    bundle.config["annotations"] = json!({"org.lrun.layers": "c@1"});
    bundle.write();
    let id = env.id("damaged");
    let out = lrun_with(&env, &store, &["run", "--bundle", bundle.path(), &id]);
    assert!(!out.status.success(), "a container ran on a foreign image");
    assert!(
        stderr(&out).contains("owned by uid 65534"),
        "{}",
        stderr(&out)
    );

    ok(&lrun_with(&env, &store, &["layer", "rm", "--force", "b@1"]));
    assert!(!sb.exists());
    let gc = ok(&lrun_with(&env, &store, &["layer", "gc"]));
    assert!(!sc.exists() && !sa.exists(), "gc left damaged images: {gc}");
    let listing = ok(&lrun_with(&env, &store, &["layer", "ls"]));
    assert!(!listing.contains("DAMAGED"), "{listing}");
    assert!(
        lrun_with(&env, &store, &["layer", "verify"])
            .status
            .success()
    );
}

// ---------------------------------------------------------------------------------------
// Item 10: pull limits. A hostile HTTP server of the test's own on 127.0.0.1: honest for
// header reads (Range requests), hostile for the full download.

#[derive(Clone, Copy)]
enum Hostile {
    /// 200 with a 1 TiB Content-Length, then endless bytes.
    HugeLength,
    /// 200 without a Content-Length: the image, then endless bytes until the client leaves.
    Endless,
    /// The right Content-Length, then one byte a second.
    Trickle,
    /// The right Content-Length, then 4 KiB a second: progress, but for ages.
    Slow,
    /// The data is a header declaring a 1 TiB payload: ranged reads answer as if the file were
    /// that long; a full download sends the header then zeros (at most 16 MiB, to spare the
    /// disk of a runtime without the defence).
    TerabyteImage,
}

const TIB: u64 = 1 << 40;

struct HostileServer {
    base: String,
    stop: Arc<AtomicBool>,
    /// Body bytes written for full downloads.
    sent: Arc<AtomicU64>,
    addr: std::net::SocketAddr,
}

impl HostileServer {
    fn start(image: &Path, how: Hostile) -> HostileServer {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let data = Arc::new(fs::read(image).unwrap());
        let (stop2, sent2) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            for c in l.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(c) = c else { continue };
                let (data, sent, stop) = (data.clone(), sent2.clone(), stop2.clone());
                std::thread::spawn(move || {
                    let _ = serve(c, &data, how, &sent, &stop);
                });
            }
        });
        HostileServer {
            base: format!("http://{addr}"),
            stop,
            sent,
            addr,
        }
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(
    mut c: TcpStream,
    data: &[u8],
    how: Hostile,
    sent: &AtomicU64,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let mut r = BufReader::new(c.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut range = None;
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
            range = Some(v.trim().to_string());
        }
    }
    let total = match how {
        Hostile::TerabyteImage => data.len() as u64 + TIB,
        _ => data.len() as u64,
    };
    if let Some(range) = range {
        // Honest ranged reads: the header passes its checks.
        let (a, b) = range.split_once('-').unwrap();
        let a: u64 = a.parse().unwrap();
        let b: u64 = b
            .parse()
            .map(|b: u64| b.min(total - 1))
            .unwrap_or(total - 1);
        write!(
            c,
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{b}/{total}\r\nConnection: close\r\n\r\n",
            b + 1 - a
        )?;
        if a as usize >= data.len() {
            let n = (b + 1 - a).min(16 << 20) as usize;
            sent.fetch_add(n as u64, Ordering::Relaxed);
            return c.write_all(&vec![0u8; n]);
        }
        let b = b.min(data.len() as u64 - 1);
        return c.write_all(&data[a as usize..=b as usize]);
    }
    let head = match how {
        Hostile::HugeLength => "Content-Length: 1099511627776\r\n".to_string(),
        Hostile::TerabyteImage => format!("Content-Length: {total}\r\n"),
        Hostile::Endless => String::new(),
        Hostile::Trickle | Hostile::Slow => format!("Content-Length: {total}\r\n"),
    };
    write!(c, "HTTP/1.1 200 OK\r\n{head}Connection: close\r\n\r\n")?;
    let (chunk, pause) = match how {
        Hostile::HugeLength | Hostile::Endless | Hostile::TerabyteImage => {
            (64 << 10, Duration::ZERO)
        }
        Hostile::Trickle => (1, Duration::from_secs(1)),
        Hostile::Slow => (4096, Duration::from_secs(1)),
    };
    let mut at = 0usize;
    let junk = vec![0x5au8; chunk];
    while !stop.load(Ordering::SeqCst) {
        let piece = if at < data.len() {
            &data[at..(at + chunk).min(data.len())]
        } else if matches!(how, Hostile::HugeLength | Hostile::Endless)
            || (matches!(how, Hostile::TerabyteImage) && at < 16 << 20)
        {
            &junk[..]
        } else {
            break;
        };
        c.write_all(piece)?;
        at += piece.len();
        sent.fetch_add(piece.len() as u64, Ordering::Relaxed);
        std::thread::sleep(pause);
    }
    Ok(())
}

/// A layer whose payload is `kib` KiB of incompressible data.
fn big_layer(env: &Env, name: &str, kib: usize) -> PathBuf {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..kib << 10)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    pack(env, name, &[("data", &data)], &[])
}

/// Pull `image` by digest from a hostile server; returns (output, ended by itself, seconds).
fn pull_from(
    env: &Env,
    store: &Path,
    srv: &HostileServer,
    image: &Path,
    extra: &[&str],
) -> (Output, bool, f64) {
    let d = digest(image);
    let mut args = vec!["layer", "pull"];
    args.extend_from_slice(extra);
    args.extend([srv.base.as_str(), d.as_str()]);
    lrun_bounded(env, store, &args, Duration::from_secs(60))
}

/// A server announcing 1 TiB for an image whose verified header declares a few hundred KiB is
/// refused before anything is written; no partial file is left.
#[test]
fn pull_refuses_a_server_announcing_another_size() {
    let env = Env::new();
    let store = env.scratch.join("store");
    let img = big_layer(&env, "huge", 256);
    let srv = HostileServer::start(&img, Hostile::HugeLength);
    let (out, ended, _) = pull_from(&env, &store, &srv, &img, &[]);
    assert!(ended, "pull did not end");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("refused") && err.contains("1099511627776"),
        "{err}"
    );
    assert_eq!(partial_files(&store), Vec::<String>::new());
    assert!(
        !store
            .join(format!("layers/sha256/{}.lrl", hex(&digest(&img))))
            .exists()
    );
}

/// An image whose (correctly checksummed) header declares a 1 TiB payload, served as if it
/// were that long: refused before a byte is written, because the store cannot hold it; no
/// partial file is left.
#[test]
fn pull_refuses_an_image_larger_than_the_store_can_hold() {
    use sha2::Digest as _;
    let env = Env::new();
    let store = env.scratch.join("store");
    let vfs = rustix::fs::statvfs(&env.scratch).unwrap();
    if vfs.f_bfree.saturating_mul(vfs.f_frsize) > TIB {
        lrun::test_support::skip("the scratch filesystem has more than 1 TiB free");
        return;
    }
    let img = big_layer(&env, "tera", 4);
    // Keep the 4096-byte header, declare a 1 TiB payload, fix the header checksum.
    let mut h = fs::read(&img).unwrap()[..4096].to_vec();
    h[64..72].copy_from_slice(&TIB.to_le_bytes());
    h[16..48].fill(0);
    let sum = sha2::Sha256::digest(&h);
    h[16..48].copy_from_slice(&sum);
    let crafted = env.scratch.join("tera-header");
    fs::write(&crafted, &h).unwrap();
    let d: String = format!(
        "sha256:{}",
        sum.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let srv = HostileServer::start(&crafted, Hostile::TerabyteImage);
    let (out, ended, _) = lrun_bounded(
        &env,
        &store,
        &["layer", "pull", &srv.base, &d],
        Duration::from_secs(60),
    );
    assert!(ended, "pull did not end");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("1.0 TiB") && err.contains("free"), "{err}");
    assert_eq!(
        srv.sent.load(Ordering::Relaxed),
        0,
        "payload bytes were fetched"
    );
    assert_eq!(partial_files(&store), Vec::<String>::new());
}

/// A server that streams without end (no Content-Length) gets the declared bytes read and no
/// more: refused, and the partial file removed.
#[test]
fn pull_stops_at_the_declared_size_of_an_endless_stream() {
    let env = Env::new();
    let store = env.scratch.join("store");
    let img = big_layer(&env, "endless", 256);
    let srv = HostileServer::start(&img, Hostile::Endless);
    let (out, ended, _) = pull_from(&env, &store, &srv, &img, &[]);
    assert!(ended, "pull did not end");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("refused") && err.contains("more than"),
        "{err}"
    );
    assert_eq!(partial_files(&store), Vec::<String>::new());
    // What the server managed to push is the image plus what the sockets buffer, no more.
    let sent = srv.sent.load(Ordering::Relaxed);
    let size = fs::metadata(&img).unwrap().len();
    assert!(
        sent < size + (64 << 20),
        "server pushed {sent} bytes for a {size}-byte image"
    );
}

/// A server trickling one byte a second: with --stall-timeout 2 the pull gives up in seconds
/// with one line that says it stalled.
#[test]
fn pull_gives_up_on_a_trickling_server() {
    let env = Env::new();
    let store = env.scratch.join("store");
    let img = big_layer(&env, "trickle", 64);
    let srv = HostileServer::start(&img, Hostile::Trickle);
    let (out, ended, secs) = pull_from(&env, &store, &srv, &img, &["--stall-timeout", "2"]);
    assert!(ended, "pull still running after {secs:.0} s");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("stalled"), "{err}");
    eprintln!("trickling server: pull gave up after {secs:.1} s");
}

/// A steady but slow server (above the stall threshold) is ended by the deadline, set here
/// through the environment as `create --pull` would get it.
#[test]
fn pull_deadline_ends_a_slow_transfer() {
    let env = Env::new();
    let store = env.scratch.join("store");
    let img = big_layer(&env, "slow", 1024);
    let srv = HostileServer::start(&img, Hostile::Slow);
    let d = digest(&img);
    let t = Instant::now();
    let mut child = env
        .lrun()
        .arg("--store")
        .arg(&store)
        .args(["layer", "pull", &srv.base, &d])
        .env("LRUN_PULL_DEADLINE", "3")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let ended = child.try_wait().unwrap().is_some();
    if !ended {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(ended, "pull still running after 60 s");
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("deadline"), "{err}");
    eprintln!(
        "slow server, deadline 3 s: pull ended after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // Not refused, only unfinished: what arrived stays to be resumed.
    assert_eq!(partial_files(&store).len(), 1);
    ok(&lrun_with(&env, &store, &["layer", "gc"]));
}

/// Directory sources: an index entry that is a symlink to /dev/zero, or a FIFO, and an image
/// that is a FIFO, are refused at once with a clear error instead of reading forever or
/// blocking.
#[test]
fn directory_source_refuses_devices_and_fifos() {
    let env = Env::new();
    let store = env.scratch.join("store");
    let src = env.scratch.join("source");
    let idx = src.join("index/app");
    fs::create_dir_all(&idx).unwrap();
    fs::create_dir_all(src.join("layers/sha256")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", idx.join("zero")).unwrap();
    assert!(
        Command::new("mkfifo")
            .arg(idx.join("fifo"))
            .status()
            .unwrap()
            .success()
    );
    let d = format!("sha256:{}", "ab".repeat(32));
    assert!(
        Command::new("mkfifo")
            .arg(src.join(format!("layers/sha256/{}.lrl", hex(&d))))
            .status()
            .unwrap()
            .success()
    );
    for (layer, kind) in [
        ("app@zero", "a character device"),
        ("app@fifo", "a fifo"),
        (d.as_str(), "a fifo"),
    ] {
        let (out, ended, secs) = lrun_bounded(
            &env,
            &store,
            &["layer", "pull", src.to_str().unwrap(), layer],
            Duration::from_secs(20),
        );
        assert!(ended, "pull of {layer} hung ({secs:.0} s)");
        assert!(!out.status.success());
        let err = stderr(&out);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(kind), "{layer}: {err}");
    }
}
