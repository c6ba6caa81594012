//! Getting layers onto a node: `lrun layer publish`/`pull` from a directory and from an HTTP
//! server (a small one of the test's own on 127.0.0.1 that counts bytes, honours Range, and
//! can corrupt a byte or cut a transfer short), `run --pull`, and the missing-layer message.
//! Needs root and mkfs.erofs.

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Env, lrun_with, ok, pack_tree};
use serde_json::{Value, json};

/// Pack a layer whose tree holds `size` bytes of varied data in /<name>.dat, plus extra files.
fn pack(env: &Env, name: &str, size: usize, deps: &[&Path], extra: &[(&str, &str)]) -> PathBuf {
    let tree = env.scratch.join(format!("tree-{name}"));
    fs::create_dir_all(&tree).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ name.len() as u64;
    let data: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(tree.join(format!("{name}.dat")), data).unwrap();
    for (p, c) in extra {
        let f = tree.join(p);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::write(f, c).unwrap();
    }
    pack_tree(env, &tree, name, deps)
}

/// base (busybox) <- mid (1 MiB) <- app (3 MiB), published into a source directory.
struct Published {
    src: PathBuf,
    files: HashMap<&'static str, PathBuf>,
}

fn publish(env: &Env) -> Published {
    let base = pack_tree(env, common::rootfs(), "base", &[]);
    let mid = pack(env, "mid", 1 << 20, &[&base], &[("etc/mid", "from mid\n")]);
    let app = pack(env, "app", 3 << 20, &[&mid], &[("etc/app", "from app\n")]);
    let src = env.scratch.join("source");
    let out = ok(&lrun_with(
        env,
        &env.scratch.join("unused-store"),
        &[
            "layer",
            "publish",
            src.to_str().unwrap(),
            base.to_str().unwrap(),
            mid.to_str().unwrap(),
            app.to_str().unwrap(),
        ],
    ));
    assert_eq!(out.matches("published").count(), 3, "{out}");
    Published {
        src,
        files: HashMap::from([("base", base), ("mid", mid), ("app", app)]),
    }
}

fn pull_json(env: &Env, store: &Path, source: &str, layers: &[&str]) -> Value {
    let mut args = vec!["layer", "pull", "--json", source];
    args.extend_from_slice(layers);
    serde_json::from_str(&ok(&lrun_with(env, store, &args))).unwrap()
}

fn labels(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            format!(
                "{}@{}",
                l["name"].as_str().unwrap(),
                l["version"].as_str().unwrap()
            )
        })
        .collect()
}

/// Nothing half-done may remain in the store: no partial download, no lock, no temp file.
fn assert_store_clean(store: &Path) {
    for d in ["partial", "tmp"] {
        let left: Vec<_> = fs::read_dir(store.join(d))
            .map(|r| r.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{d}/ holds {left:?}");
    }
}

// ---------------------------------------------------------------------------------------
// A static file server: GET with optional Range, one request per connection.

#[derive(Default)]
struct Faults {
    /// (file name suffix, byte offset): that byte is sent flipped, every time.
    corrupt: Option<(String, u64)>,
    /// (file name suffix, bytes): the next full-body response stops after that many bytes.
    cut_once: Option<(String, u64)>,
    /// Delay per 64 KiB sent, to make transfers overlap.
    throttle: Option<Duration>,
    /// Ignore Range headers: always send the whole file with 200.
    no_range: bool,
    /// Responses of the `cut_once` file to let through before cutting one.
    cut_skip: usize,
}

#[derive(Debug, Clone)]
struct Served {
    path: String,
    range: Option<String>,
    status: u16,
    bytes: u64,
}

struct Server {
    base: String,
    log: Arc<Mutex<Vec<Served>>>,
    faults: Arc<Mutex<Faults>>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
}

impl Server {
    fn start(root: &Path) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let faults = Arc::new(Mutex::new(Faults::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (root, log2, faults2, stop2) = (
            root.to_path_buf(),
            log.clone(),
            faults.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            for c in l.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(c) = c else { continue };
                let (root, log, faults) = (root.clone(), log2.clone(), faults2.clone());
                std::thread::spawn(move || {
                    let _ = serve(c, &root, &log, &faults);
                });
            }
        });
        Server {
            base: format!("http://{addr}"),
            log,
            faults,
            stop,
            addr,
        }
    }

    fn requests(&self) -> Vec<Served> {
        self.log.lock().unwrap().clone()
    }

    fn clear(&self) {
        self.log.lock().unwrap().clear();
    }

    /// Body bytes sent for files ending in `suffix`.
    fn bytes_for(&self, suffix: &str) -> u64 {
        self.requests()
            .iter()
            .filter(|r| r.path.ends_with(suffix))
            .map(|r| r.bytes)
            .sum()
    }

    /// Requests for the image ending in `suffix` other than header reads (bytes=0-4095).
    fn body_requests(&self, suffix: &str) -> Vec<Served> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.ends_with(suffix) && r.range.as_deref() != Some("bytes=0-4095"))
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(
    c: TcpStream,
    root: &Path,
    log: &Mutex<Vec<Served>>,
    faults: &Mutex<Faults>,
) -> std::io::Result<()> {
    let mut r = BufReader::new(c.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("range")
        {
            range = Some(v.trim().to_string());
        }
    }
    let mut w = c;
    if faults.lock().unwrap().no_range {
        range = None;
    }
    let file = root.join(path.trim_start_matches('/'));
    let Ok(data) = fs::read(&file) else {
        write!(
            w,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        log.lock().unwrap().push(Served {
            path,
            range,
            status: 404,
            bytes: 0,
        });
        return Ok(());
    };
    let total = data.len() as u64;
    let (start, end) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
        Some(spec) => {
            let (a, b) = spec.split_once('-').unwrap();
            let a: u64 = a.parse().unwrap();
            let b: u64 = if b.is_empty() {
                total - 1
            } else {
                b.parse::<u64>().unwrap().min(total - 1)
            };
            if a >= total {
                write!(
                    w,
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{total}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )?;
                log.lock().unwrap().push(Served {
                    path,
                    range,
                    status: 416,
                    bytes: 0,
                });
                return Ok(());
            }
            (a, b)
        }
        None => (0, total - 1),
    };
    let partial = range.is_some();
    if partial {
        write!(
            w,
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{end}/{total}\r\n"
        )?;
    } else {
        write!(w, "HTTP/1.1 200 OK\r\n")?;
    }
    write!(
        w,
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        end - start + 1
    )?;
    let mut body = data[start as usize..=end as usize].to_vec();
    let (throttle, cut) = {
        let mut f = faults.lock().unwrap();
        if let Some((suffix, off)) = &f.corrupt
            && path.ends_with(suffix.as_str())
            && (start..=end).contains(off)
        {
            body[(off - start) as usize] ^= 0xff;
        }
        let cut = match &f.cut_once {
            Some((suffix, _)) if path.ends_with(suffix.as_str()) && f.cut_skip > 0 => {
                f.cut_skip -= 1;
                None
            }
            Some((suffix, n)) if path.ends_with(suffix.as_str()) && body.len() > 4096 => {
                let n = *n;
                f.cut_once = None;
                Some(n as usize)
            }
            _ => None,
        };
        (f.throttle, cut)
    };
    let send = cut.unwrap_or(body.len()).min(body.len());
    let mut sent = 0;
    for chunk in body[..send].chunks(64 << 10) {
        if w.write_all(chunk).is_err() {
            break;
        }
        sent += chunk.len();
        if let Some(t) = throttle {
            std::thread::sleep(t);
        }
    }
    log.lock().unwrap().push(Served {
        path,
        range,
        status: if partial { 206 } else { 200 },
        bytes: sent as u64,
    });
    // A cut transfer: close with the body short of its Content-Length.
    let _ = w.shutdown(std::net::Shutdown::Both);
    Ok(())
}

fn size(p: &Path) -> u64 {
    fs::metadata(p).unwrap().len()
}

fn image_suffix(file: &Path) -> String {
    let out = common::lrun_command()
        .args(["layer", "inspect", "--json", file.to_str().unwrap()])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = v["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap();
    format!("{d}.lrl")
}

// ---------------------------------------------------------------------------------------

#[test]
fn pull_from_directory_fetches_closure_then_only_what_is_missing() {
    let env = Env::new();
    let p = publish(&env);
    let store = env.scratch.join("store");
    let src = p.src.to_str().unwrap();
    let v = pull_json(&env, &store, src, &["mid@1"]);
    assert_eq!(labels(&v, "fetched"), ["base@1", "mid@1"]);
    assert!(labels(&v, "present").is_empty());
    let v = pull_json(&env, &store, src, &["app@1"]);
    assert_eq!(labels(&v, "fetched"), ["app@1"]);
    assert_eq!(labels(&v, "present"), ["base@1", "mid@1"]);
    assert_eq!(v["bytesFetched"], json!(size(&p.files["app"])));
    // The stored copies are the published bytes.
    let ls: Value =
        serde_json::from_str(&ok(&lrun_with(&env, &store, &["layer", "ls", "--json"]))).unwrap();
    assert_eq!(ls.as_array().unwrap().len(), 3);
    assert_store_clean(&store);
    // Unknown names fail with one line naming the source.
    let out = lrun_with(&env, &store, &["layer", "pull", src, "nope@1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("nope@1") && err.contains(src), "{err}");
    // An index entry naming another image is caught by the header's own name.
    let mid_digest = fs::read_to_string(p.src.join("index/mid/1")).unwrap();
    fs::create_dir_all(p.src.join("index/bogus")).unwrap();
    fs::write(p.src.join("index/bogus/1"), mid_digest).unwrap();
    let out = lrun_with(
        &env,
        &env.scratch.join("store2"),
        &["layer", "pull", src, "bogus@1"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bogus@1") && err.contains("mid@1"), "{err}");
}

#[test]
fn pull_over_http_transfers_only_missing_layers() {
    let env = Env::new();
    let p = publish(&env);
    let srv = Server::start(&p.src);
    let store = env.scratch.join("store");
    let v = pull_json(&env, &store, &srv.base, &["mid@1"]);
    assert_eq!(labels(&v, "fetched"), ["base@1", "mid@1"]);
    srv.clear();
    let v = pull_json(&env, &store, &srv.base, &["app@1"]);
    assert_eq!(labels(&v, "fetched"), ["app@1"]);
    assert_eq!(labels(&v, "present"), ["base@1", "mid@1"]);
    // One header read of app (4 KiB) and app's bytes; nothing of base or mid, which the
    // node had: their headers came from the store.
    let app = size(&p.files["app"]);
    let served: u64 = srv.requests().iter().map(|r| r.bytes).sum();
    assert_eq!(
        served,
        app + 4096 + "sha256:".len() as u64 + 65,
        "{:?}",
        srv.requests()
    );
    assert_eq!(srv.bytes_for(&image_suffix(&p.files["base"])), 0);
    assert_eq!(srv.bytes_for(&image_suffix(&p.files["mid"])), 0);
    assert_eq!(v["bytesFetched"], json!(app));
    // Nothing missing: nothing fetched, not even the index (the node knows app@1).
    srv.clear();
    let v = pull_json(&env, &store, &srv.base, &["app@1"]);
    assert!(labels(&v, "fetched").is_empty());
    assert!(srv.requests().is_empty(), "{:?}", srv.requests());
    assert_store_clean(&store);
}

#[test]
fn concurrent_pulls_download_a_layer_once() {
    let env = Env::new();
    let p = publish(&env);
    let srv = Server::start(&p.src);
    // ~50 ms per 64 KiB: app (3 MiB) takes ~2.5 s, so the pulls overlap.
    srv.faults.lock().unwrap().throttle = Some(Duration::from_millis(50));
    let store = env.scratch.join("store");
    let spawn = || {
        common::lrun_command()
            .arg("--root")
            .arg(&env.root)
            .arg("--store")
            .arg(&store)
            .args(["layer", "pull", "--json", &srv.base, "app@1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let mut fetched_app = 0;
    for o in &outs {
        let v: Value = serde_json::from_str(&ok(o)).unwrap();
        if labels(&v, "fetched").contains(&"app@1".to_string()) {
            fetched_app += 1;
        }
    }
    assert_eq!(fetched_app, 1, "exactly one pull downloads app");
    for name in ["base", "mid", "app"] {
        let suffix = image_suffix(&p.files[name]);
        let bodies = srv.body_requests(&suffix);
        assert_eq!(bodies.len(), 1, "{name}: {bodies:?}");
        assert_eq!(bodies[0].bytes, size(&p.files[name]), "{name}");
    }
    assert_store_clean(&store);
}

#[test]
fn corrupt_byte_is_rejected_and_removed() {
    let env = Env::new();
    let p = publish(&env);
    let srv = Server::start(&p.src);
    let suffix = image_suffix(&p.files["mid"]);
    // A byte in the payload (past the 4 KiB header): only the payload digest can catch it.
    srv.faults.lock().unwrap().corrupt = Some((suffix.clone(), 300_000));
    let store = env.scratch.join("store");
    let out = lrun_with(&env, &store, &["layer", "pull", &srv.base, "mid@1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("payload digest mismatch"), "{err}");
    assert!(err.contains("mid@1") && err.contains("removed"), "{err}");
    assert!(
        !store.join("layers/sha256").join(&suffix).exists(),
        "a corrupt image reached the store"
    );
    assert!(!store.join("names/mid@1").exists());
    assert_store_clean(&store);
    // base, verified, stays; with the fault gone a new pull fetches only mid.
    srv.faults.lock().unwrap().corrupt = None;
    let v = pull_json(&env, &store, &srv.base, &["mid@1"]);
    assert_eq!(labels(&v, "fetched"), ["mid@1"]);
    assert_eq!(labels(&v, "present"), ["base@1"]);
}

#[test]
fn interrupted_transfer_resumes_with_range() {
    let env = Env::new();
    let p = publish(&env);
    let srv = Server::start(&p.src);
    let suffix = image_suffix(&p.files["app"]);
    srv.faults.lock().unwrap().cut_once = Some((suffix.clone(), 1 << 20));
    let store = env.scratch.join("store");
    let v = pull_json(&env, &store, &srv.base, &["app@1"]);
    assert_eq!(labels(&v, "fetched"), ["base@1", "mid@1", "app@1"]);
    let total = size(&p.files["app"]);
    let bodies = srv.body_requests(&suffix);
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(bodies[0].bytes, 1 << 20);
    assert_eq!(bodies[1].range.as_deref(), Some("bytes=1048576-"));
    assert_eq!(bodies[1].status, 206);
    // Every byte crossed the network once.
    assert_eq!(bodies[0].bytes + bodies[1].bytes, total);
    assert_store_clean(&store);
    let out = ok(&lrun_with(
        &env,
        &store,
        &[
            "layer",
            "verify",
            store.join("layers/sha256").join(&suffix).to_str().unwrap(),
        ],
    ));
    assert!(out.contains("ok"), "{out}");
}

#[test]
fn killed_pull_leaves_nothing_visible_and_the_next_pull_resumes() {
    let env = Env::new();
    let p = publish(&env);
    let srv = Server::start(&p.src);
    srv.faults.lock().unwrap().throttle = Some(Duration::from_millis(20));
    let store = env.scratch.join("store");
    let suffix = image_suffix(&p.files["app"]);
    let mut child = common::lrun_command()
        .arg("--store")
        .arg(&store)
        .args(["layer", "pull", &srv.base, "app@1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until app's download is under way, then kill the pull.
    let partial = store.join("partial").join(format!("{suffix}.partial"));
    let mut waited = 0;
    while fs::metadata(&partial).map(|m| m.len()).unwrap_or(0) < 256 << 10 {
        std::thread::sleep(Duration::from_millis(20));
        waited += 1;
        assert!(waited < 1000, "download of app never started");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let have = fs::metadata(&partial).unwrap().len();
    assert!(!store.join("layers/sha256").join(&suffix).exists());
    assert!(!store.join("names/app@1").exists());
    srv.faults.lock().unwrap().throttle = None;
    // The server notices the dead client when its next write fails: wait for that request
    // to be logged so it is not counted as the resumed one.
    let mut waited = 0;
    while srv.body_requests(&suffix).is_empty() {
        std::thread::sleep(Duration::from_millis(20));
        waited += 1;
        assert!(waited < 500, "the killed transfer never ended");
    }
    srv.clear();
    let v = pull_json(&env, &store, &srv.base, &["app@1"]);
    assert_eq!(labels(&v, "fetched"), ["app@1"]);
    let bodies = srv.body_requests(&suffix);
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let start: u64 = bodies[0]
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    assert!(start > 0 && start <= have, "resumed at {start}, had {have}");
    assert_eq!(start + bodies[0].bytes, size(&p.files["app"]));
    assert_store_clean(&store);
}

#[test]
fn layer_gc_removes_an_abandoned_partial_download() {
    let env = Env::new();
    let store = env.scratch.join("store");
    let dir = store.join("partial");
    fs::create_dir_all(&dir).unwrap();
    let partial = dir.join(format!("{}.lrl.partial", "ab".repeat(32)));
    fs::write(&partial, vec![0u8; 4096]).unwrap();
    let out = common::lrun_command()
        .arg("--store")
        .arg(&store)
        .arg("--root")
        .arg(&env.root)
        .args(["layer", "gc"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !partial.exists(),
        "abandoned partial download left in the store"
    );
}

#[test]
fn run_with_pull_fetches_missing_layers_first() {
    let mut env = Env::new();
    let p = publish(&env);
    let srv = Server::start(&p.src);
    let store = env.scratch.join("store");
    let mut b = env.bundle("pull", &["sh", "-c", "cat /etc/mid /etc/app"]);
    b.config["root"] = json!({"path": "rootfs", "readonly": true});
    b.config["annotations"] = json!({"org.lrun.layers": "app@1"});
    b.write();
    // Without --pull: one line naming what is missing and how to get it.
    let id = env.id("nopull");
    let out = lrun_with(&env, &store, &["run", "--bundle", b.path(), &id]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("app@1") && err.contains("--pull"), "{err}");
    let id = env.id("pull");
    let out = lrun_with(
        &env,
        &store,
        &["run", "--pull", &srv.base, "--bundle", b.path(), &id],
    );
    assert_eq!(ok(&out), "from mid\nfrom app\n");
    // A dependency missing under a present top is named with who needs it.
    let d = image_suffix(&p.files["mid"]);
    fs::remove_file(store.join("layers/sha256").join(&d)).unwrap();
    let id = env.id("nomid");
    let out = lrun_with(&env, &store, &["run", "--bundle", b.path(), &id]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("mid@1") && err.contains("needed by app@1") && err.contains("--pull"),
        "{err}"
    );
    let id = env.id("repull");
    // create leaves the init holding its stdio: do not capture it.
    let st = common::lrun_command()
        .arg("--root")
        .arg(&env.root)
        .arg("--store")
        .arg(&store)
        .args([
            "create",
            "--pull",
            p.src.to_str().unwrap(),
            "--bundle",
            b.path(),
            &id,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "create --pull");
    assert_eq!(env.status(&id), "created");
    ok(&lrun_with(&env, &store, &["delete", "--force", &id]));
}

#[test]
fn server_without_range_support_still_works_and_restarts_cut_transfers() {
    let env = Env::new();
    let p = publish(&env);
    let srv = Server::start(&p.src);
    let suffix = image_suffix(&p.files["app"]);
    {
        let mut f = srv.faults.lock().unwrap();
        f.no_range = true;
        // Skip the header read (a whole-file response too, without Range).
        f.cut_skip = 1;
        f.cut_once = Some((suffix.clone(), 1 << 20));
    }
    let store = env.scratch.join("store");
    let v = pull_json(&env, &store, &srv.base, &["app@1"]);
    assert_eq!(labels(&v, "fetched"), ["base@1", "mid@1", "app@1"]);
    // Header reads got whole files (200) and were cut off by the client after 4 KiB; the cut
    // download was restarted from byte 0, since the server cannot resume.
    let total = size(&p.files["app"]);
    assert_eq!(v["fetched"][2]["bytes"], json!((1 << 20) + total));
    assert_store_clean(&store);
    let out = ok(&lrun_with(
        &env,
        &store,
        &[
            "layer",
            "verify",
            store.join("layers/sha256").join(&suffix).to_str().unwrap(),
        ],
    ));
    assert!(out.contains("ok"), "{out}");
}

/// A copy of the runtime binary, alone or with a copy of the helper, in a directory of
/// its own (so modes and owners can be changed without touching the build's binaries).
fn install(env: &Env, dir: &str, helper: bool) -> PathBuf {
    let d = env.scratch.join(dir);
    fs::create_dir_all(&d).unwrap();
    fs::copy(common::LRUN, d.join("lrun")).unwrap();
    if helper {
        fs::copy(env!("CARGO_BIN_EXE_lrun-fetch"), d.join("lrun-fetch")).unwrap();
    }
    d.join("lrun")
}

fn installed(env: &Env, lrun: &Path, store: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(lrun)
        .env("LRUN_LAYER_IDLE_TIMEOUT", "0")
        .arg("--root")
        .arg(&env.root)
        .arg("--store")
        .arg(store)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The error of a command that must fail with one line.
fn one_line_error(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "succeeded");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    err
}

#[test]
fn runtime_binary_needs_no_helper_to_run_containers_or_pull_from_a_directory() {
    let mut env = Env::new();
    let p = publish(&env);
    let lrun = install(&env, "alone", false);
    let store = env.scratch.join("store");
    // A plain bundle: create, start, state, delete, and run.
    let b = env.bundle("alone", &["sh", "-c", "echo hello"]);
    b.write();
    let id = env.id("alone");
    let out = installed(&env, &lrun, &store, &["run", "--bundle", b.path(), &id]);
    assert_eq!(ok(&out), "hello\n");
    // A layered bundle whose layers a directory source provides.
    let mut b = env.bundle("alone-layered", &["cat", "/etc/app"]);
    b.config["root"] = json!({"path": "rootfs", "readonly": true});
    b.config["annotations"] = json!({"org.lrun.layers": "app@1"});
    b.write();
    let id = env.id("alone-layered");
    let src = p.src.to_str().unwrap();
    let args = ["run", "--pull", src, "--bundle", b.path(), &id];
    assert_eq!(ok(&installed(&env, &lrun, &store, &args)), "from app\n");
    // What needs the network code says which file it needs.
    let out = installed(&env, &lrun, &store, &["layer", "pull", src, "app@1"]);
    let err = one_line_error(&out);
    assert!(err.contains("lrun-fetch"), "{err}");
}

#[test]
fn helper_not_owned_by_root_or_writable_by_others_is_refused() {
    use std::os::unix::fs::{PermissionsExt, chown};
    let env = Env::new();
    let p = publish(&env);
    let lrun = install(&env, "bin", true);
    let dir = lrun.parent().unwrap();
    let helper = dir.join("lrun-fetch");
    let src = p.src.to_str().unwrap();
    let pull = |n: usize| {
        let store = env.scratch.join(format!("store{n}"));
        installed(&env, &lrun, &store, &["layer", "pull", src, "mid@1"])
    };
    ok(&pull(0));
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o757)).unwrap();
    let err = one_line_error(&pull(1));
    assert!(
        err.contains("lrun-fetch") && err.contains("writable"),
        "{err}"
    );
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).unwrap();
    chown(&helper, Some(65534), None).unwrap();
    let err = one_line_error(&pull(2));
    assert!(err.contains("lrun-fetch") && err.contains("65534"), "{err}");
    chown(&helper, Some(0), None).unwrap();
    // The directory it is found in counts too: whoever can write there can replace it.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o777)).unwrap();
    let err = one_line_error(&pull(3));
    assert!(
        err.contains("writable") && err.contains(dir.to_str().unwrap()),
        "{err}"
    );
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    ok(&pull(4));
}
