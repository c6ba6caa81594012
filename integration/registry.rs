//! An OCI registry as layer source, publish target and image source, against the real thing:
//! Debian's `docker-registry` (distribution 2.8) started here on 127.0.0.1 with TLS (a CA
//! and server certificate made here with openssl) and htpasswd (bcrypt) auth; `skopeo`
//! pushes an OCI image built here with a gzip and a zstd layer. A TCP proxy of the test's
//! own cuts one blob transfer to check resumption. Needs root, mkfs.erofs and the packages
//! scripts/setup-registry installs (it is run first).

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Env, ok};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const USER: &str = "tester";
const PASS: &str = "s3cret-pass";

/// A registry process of this test, killed (by its pid) and its directory removed on drop.
struct Registry {
    child: Child,
    /// The token server of a Bearer-auth registry, killed the same way.
    token_server: Option<Child>,
    dir: PathBuf,
    port: u16,
}

/// How the registry authenticates.
#[derive(PartialEq)]
enum Auth {
    /// htpasswd: `WWW-Authenticate: Basic`.
    Basic,
    /// A token server (`TOKEN_SERVER`): `WWW-Authenticate: Bearer realm=…`.
    Bearer,
}

/// A token server in the distribution spec's sense: checks Basic credentials, answers
/// `{"token": JWT}` for the scope asked, the JWT RS256-signed (openssl) with the key whose
/// self-signed certificate the registry trusts (`rootcertbundle`), carried in `x5c`.
const TOKEN_SERVER: &str = r#"
import base64, json, os, ssl, subprocess, sys, time, urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer
port, d, user, pw = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
der = subprocess.run(["openssl", "x509", "-in", d + "/token.crt", "-outform", "DER"],
                     check=True, capture_output=True).stdout
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        want = "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
        if self.headers.get("Authorization") != want:
            self.send_response(401); self.end_headers(); return
        q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        access = []
        for s in q.get("scope", []):
            kind, name, actions = s.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {"iss": "lrun-test-issuer", "sub": user, "aud": q.get("service", [""])[0],
                  "exp": now + 600, "nbf": now - 60, "iat": now, "jti": os.urandom(8).hex(),
                  "access": access}
        head = {"alg": "RS256", "typ": "JWT", "x5c": [base64.b64encode(der).decode()]}
        signing = b64(json.dumps(head).encode()) + "." + b64(json.dumps(claims).encode())
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", d + "/token.key"],
                             input=signing.encode(), check=True, capture_output=True).stdout
        body = json.dumps({"token": signing + "." + b64(sig)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
srv = HTTPServer(("127.0.0.1", port), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(d + "/server.crt", d + "/server.key")
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;

fn wait_listening(port: u16, log: &Path) {
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "nothing listens on {port}: {}",
            fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run_ok(c: &mut Command) {
    let out = c.output().expect("spawn");
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    /// None (the test is skipped) when the packages cannot be installed.
    fn start(env: &Env) -> Option<Registry> {
        Registry::start_with(env, Auth::Basic)
    }

    fn start_with(env: &Env, auth: Auth) -> Option<Registry> {
        // Once per test binary: parallel tests must not run apt-get side by side.
        static SETUP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let ready = *SETUP.get_or_init(|| {
            let setup = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup-registry");
            matches!(Command::new(&setup).status(), Ok(s) if s.success())
        });
        if !ready {
            lrun::test_support::skip("scripts/setup-registry failed (docker-registry, skopeo)");
            return None;
        }
        let dir = env.scratch.join("registry");
        fs::create_dir_all(dir.join("certs")).unwrap();
        let d = |f: &str| dir.join(f).to_str().unwrap().to_string();
        run_ok(Command::new("openssl").args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=lrun test CA",
            "-keyout",
            &d("ca.key"),
            "-out",
            &d("certs/ca.crt"),
        ]));
        run_ok(Command::new("openssl").args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &d("server.key"),
            "-out",
            &d("server.csr"),
        ]));
        fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        run_ok(Command::new("openssl").args([
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &d("server.csr"),
            "-CA",
            &d("certs/ca.crt"),
            "-CAkey",
            &d("ca.key"),
            "-CAcreateserial",
            "-extfile",
            &d("ext.cnf"),
            "-out",
            &d("server.crt"),
        ]));
        let ht = Command::new("htpasswd")
            .args(["-Bbn", USER, PASS])
            .output()
            .unwrap();
        assert!(ht.status.success());
        fs::write(dir.join("htpasswd"), ht.stdout).unwrap();
        let port = free_port();
        let mut token_server = None;
        let auth_conf = match auth {
            Auth::Basic => format!(
                "auth:\n  htpasswd:\n    realm: lrun-test\n    path: {}\n",
                d("htpasswd")
            ),
            Auth::Bearer => {
                run_ok(Command::new("openssl").args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=lrun test token signer",
                    "-keyout",
                    &d("token.key"),
                    "-out",
                    &d("token.crt"),
                ]));
                let tport = free_port();
                let log = fs::File::create(dir.join("token.log")).unwrap();
                let child = Command::new("python3")
                    .args(["-c", TOKEN_SERVER, &tport.to_string(), &d(""), USER, PASS])
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .spawn()
                    .expect("start the token server");
                token_server = Some(child);
                wait_listening(tport, &dir.join("token.log"));
                format!(
                    "auth:\n  token:\n    realm: https://127.0.0.1:{tport}/token\n    service: lrun-test-registry\n    issuer: lrun-test-issuer\n    rootcertbundle: {}\n",
                    d("token.crt")
                )
            }
        };
        fs::write(
            dir.join("config.yml"),
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: lrun-test\n  tls:\n    certificate: {}\n    key: {}\n{auth_conf}",
                d("data"),
                d("server.crt"),
                d("server.key"),
            ),
        )
        .unwrap();
        let log = fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .args(["serve", &d("config.yml")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let reg = Registry {
            child,
            token_server,
            dir,
            port,
        };
        wait_listening(port, &reg.dir.join("registry.log"));
        Some(reg)
    }

    fn url(&self, repo: &str) -> String {
        format!("docker://127.0.0.1:{}/{repo}", self.port)
    }

    fn certs(&self) -> String {
        self.dir.join("certs").to_str().unwrap().to_string()
    }

    /// The registry's stored copy of a blob.
    fn blob_file(&self, sha_hex: &str) -> PathBuf {
        self.dir
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&sha_hex[..2])
            .join(sha_hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Child::kill signals this child's own pid.
        for c in std::iter::once(&mut self.child).chain(self.token_server.as_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// lrun with the registry's credentials and CA on the command line.
fn lrun_reg(env: &Env, reg: &Registry, store: &Path, args: &[&str]) -> Output {
    let creds = format!("{USER}:{PASS}");
    let mut c = env.lrun();
    c.arg("--store").arg(store).args(args);
    c.args(["--creds", &creds, "--cert-dir", &reg.certs()]);
    c.stdin(Stdio::null()).output().expect("run lrun")
}

/// `lrun image import REFERENCE --name N --version V -o BUNDLE EXTRA...` (`label` is
/// `N@V`) through the test registry; its output.
fn import(
    env: &Env,
    reg: &Registry,
    store: &Path,
    reference: &str,
    label: &str,
    bundle: &Path,
    extra: &[&str],
) -> String {
    let (name, version) = label.split_once('@').unwrap();
    let mut args = vec![
        "image",
        "import",
        reference,
        "--name",
        name,
        "--version",
        version,
    ];
    args.extend(["-o", bundle.to_str().unwrap()]);
    args.extend(extra);
    ok(&lrun_reg(env, reg, store, &args))
}

/// `lrun run` of an imported bundle (a fresh container id from `name`); its stdout.
fn run_bundle(env: &mut Env, store: &Path, bundle: &Path, name: &str) -> String {
    let id = env.id(name);
    ok(&common::lrun_with(
        env,
        store,
        &["run", "--bundle", bundle.to_str().unwrap(), &id],
    ))
}

fn sha_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A layer whose tree holds `size` bytes of varied data, and extra files.
fn pack(
    env: &Env,
    name: &str,
    version: &str,
    size: usize,
    dep: Option<&Path>,
    extra: &[(&str, &str)],
) -> PathBuf {
    let tree = env.scratch.join(format!("tree-{name}-{version}"));
    fs::create_dir_all(tree.join("etc")).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (name.len() + version.len()) as u64;
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
        fs::write(tree.join(p), c).unwrap();
    }
    let out = env.scratch.join(format!("{name}-{version}.lrl"));
    let deps: Vec<&Path> = dep.into_iter().collect();
    common::pack_as(env, &tree, name, version, &deps, &out);
    out
}

fn base_layer(env: &Env) -> PathBuf {
    common::pack_tree(env, common::rootfs(), "base", &[])
}

fn size(p: &Path) -> u64 {
    fs::metadata(p).unwrap().len()
}

fn fetched(v: &Value) -> Vec<String> {
    v["fetched"]
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

fn pull_json(env: &Env, reg: &Registry, store: &Path, url: &str, layers: &[&str]) -> Value {
    let mut args = vec!["layer", "pull", "--json", url];
    args.extend_from_slice(layers);
    serde_json::from_str(&ok(&lrun_reg(env, reg, store, &args))).unwrap()
}

#[test]
fn layers_publish_and_pull_through_a_registry_with_tls_and_auth() {
    let mut env = Env::new();
    let Some(reg) = Registry::start(&env) else {
        return;
    };
    let url = reg.url("lrun/layers");
    let base = base_layer(&env);
    let mid = pack(
        &env,
        "mid",
        "1",
        1 << 20,
        Some(&base),
        &[("etc/mid", "from mid\n")],
    );
    let app = pack(
        &env,
        "app",
        "1",
        3 << 20,
        Some(&mid),
        &[("etc/app", "from app\n")],
    );
    let t = Instant::now();
    let out = ok(&lrun_reg(
        &env,
        &reg,
        &env.scratch.join("none"),
        &[
            "layer",
            "publish",
            &url,
            base.to_str().unwrap(),
            mid.to_str().unwrap(),
            app.to_str().unwrap(),
        ],
    ));
    eprintln!("publish of 3 layers: {:.2} s", t.elapsed().as_secs_f64());
    assert_eq!(out.matches("published").count(), 3, "{out}");

    // An empty store gets the whole closure, every byte once.
    let store = env.scratch.join("store");
    let v = pull_json(&env, &reg, &store, &url, &["app@1"]);
    assert_eq!(fetched(&v), ["base@1", "mid@1", "app@1"]);
    let total = size(&base) + size(&mid) + size(&app);
    assert_eq!(v["bytesFetched"], json!(total), "{v}");
    eprintln!(
        "pull of 3 layers: {total} bytes in {:.3} s",
        v["seconds"].as_f64().unwrap()
    );
    // A second pull moves nothing.
    let v = pull_json(&env, &reg, &store, &url, &["app@1"]);
    assert!(fetched(&v).is_empty(), "{v}");
    assert_eq!(v["bytesFetched"], json!(0));
    // A changed top layer: only it moves.
    let app2 = pack(
        &env,
        "app",
        "2",
        3 << 20,
        Some(&mid),
        &[("etc/app", "app two\n")],
    );
    ok(&lrun_reg(
        &env,
        &reg,
        &env.scratch.join("none"),
        &["layer", "publish", &url, app2.to_str().unwrap()],
    ));
    let v = pull_json(&env, &reg, &store, &url, &["app@2"]);
    assert_eq!(fetched(&v), ["app@2"]);
    assert_eq!(v["bytesFetched"], json!(size(&app2)), "{v}");
    eprintln!(
        "pull of a changed top: {} bytes in {:.3} s",
        size(&app2),
        v["seconds"].as_f64().unwrap()
    );

    // Two concurrent pulls into one empty store download each layer once between them.
    let shared = env.scratch.join("shared");
    let spawn = || {
        env.lrun()
            .arg("--store")
            .arg(&shared)
            .args(["layer", "pull", "--json", &url, "app@1"])
            .args([
                "--creds",
                &format!("{USER}:{PASS}"),
                "--cert-dir",
                &reg.certs(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let mut bytes = 0;
    for c in [a, b] {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success());
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        bytes += v["bytesFetched"].as_u64().unwrap();
    }
    assert_eq!(bytes, total, "each layer crosses once");

    // Wrong credentials: one clear line, nothing stored.
    let fresh = env.scratch.join("fresh");
    let out = env
        .lrun()
        .arg("--store")
        .arg(&fresh)
        .args([
            "layer",
            "pull",
            &url,
            "app@1",
            "--creds",
            &format!("{USER}:wrong"),
        ])
        .args(["--cert-dir", &reg.certs()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("authentication failed as \"tester\""), "{err}");
    // No CA: the certificate is refused, with a hint.
    let out = env
        .lrun()
        .arg("--store")
        .arg(&fresh)
        .args([
            "layer",
            "pull",
            &url,
            "app@1",
            "--creds",
            &format!("{USER}:{PASS}"),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("UnknownIssuer") && err.contains("--cert-dir"),
        "{err}"
    );
    assert!(
        !fresh.join("layers/sha256").exists()
            || fs::read_dir(fresh.join("layers/sha256")).unwrap().count() == 0
    );

    // run --pull docker://…, credentials from an auth file (as podman login writes it) and
    // the CA from SSL_CERT_FILE.
    let auth = env.scratch.join("auth.json");
    let b64 = base64_encode(format!("{USER}:{PASS}").as_bytes());
    fs::write(
        &auth,
        json!({"auths": {format!("127.0.0.1:{}", reg.port): {"auth": b64}}}).to_string(),
    )
    .unwrap();
    let mut b = env.bundle("regpull", &["sh", "-c", "cat /etc/mid /etc/app"]);
    b.config["root"] = json!({"path": "rootfs", "readonly": true});
    b.config["annotations"] = json!({"org.lrun.layers": "app@2"});
    b.write();
    let id = env.id("regpull");
    let store2 = env.scratch.join("store2");
    let out = env
        .lrun()
        .arg("--store")
        .arg(&store2)
        .args(["run", "--pull", &url, "--bundle", b.path(), &id])
        .env("REGISTRY_AUTH_FILE", &auth)
        .env("SSL_CERT_FILE", reg.dir.join("certs/ca.crt"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(ok(&out), "from mid\napp two\n");
}

#[test]
fn bearer_token_auth_publishes_and_pulls() {
    let env = Env::new();
    let Some(reg) = Registry::start_with(&env, Auth::Bearer) else {
        return;
    };
    let url = reg.url("lrun/bearer");
    let one = pack(&env, "one", "1", 256 << 10, None, &[]);
    let out = ok(&lrun_reg(
        &env,
        &reg,
        &env.scratch.join("none"),
        &["layer", "publish", &url, one.to_str().unwrap()],
    ));
    assert!(out.contains("published"), "{out}");
    let v = pull_json(&env, &reg, &env.scratch.join("store"), &url, &["one@1"]);
    assert_eq!(v["bytesFetched"], json!(size(&one)), "{v}");
    // The token server refuses wrong credentials: one clear line.
    let out = env
        .lrun()
        .arg("--store")
        .arg(env.scratch.join("fresh"))
        .args([
            "layer",
            "pull",
            &url,
            "one@1",
            "--creds",
            &format!("{USER}:wrong"),
        ])
        .args(["--cert-dir", &reg.certs()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("authentication failed as \"tester\" (token from https://"),
        "{err}"
    );
}

fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A TCP proxy to `target` that cuts the first connection sending more than `cut_after`
/// bytes towards the client; counts bytes sent to clients.
struct Proxy {
    port: u16,
    cuts: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
}

impl Proxy {
    fn start(target: u16, cut_after: u64) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let cuts = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicU64::new(0));
        let armed = Arc::new(AtomicBool::new(true));
        let (c2, d2) = (cuts.clone(), down.clone());
        std::thread::spawn(move || {
            for client in l.incoming() {
                let Ok(client) = client else { break };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (mut cr, mut sw) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut cr, &mut sw);
                    let _ = sw.shutdown(Shutdown::Write);
                });
                let (armed, cuts, down) = (armed.clone(), c2.clone(), d2.clone());
                std::thread::spawn(move || {
                    let (mut sr, mut cw) = (server, client);
                    let mut sent = 0u64;
                    let mut buf = [0u8; 16384];
                    loop {
                        let n = match sr.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if cw.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        sent += n as u64;
                        down.fetch_add(n as u64, Ordering::SeqCst);
                        if sent > cut_after && armed.swap(false, Ordering::SeqCst) {
                            cuts.fetch_add(1, Ordering::SeqCst);
                            let _ = cw.shutdown(Shutdown::Both);
                            let _ = sr.shutdown(Shutdown::Both);
                            break;
                        }
                    }
                    let _ = cw.shutdown(Shutdown::Write);
                });
            }
        });
        Proxy { port, cuts, down }
    }
}

#[test]
fn corrupt_blob_is_refused_and_a_cut_download_resumes() {
    let env = Env::new();
    let Some(reg) = Registry::start(&env) else {
        return;
    };
    let url = reg.url("lrun/cut");
    let big = pack(&env, "big", "1", 4 << 20, None, &[]);
    let other = pack(&env, "other", "1", 64 << 10, None, &[]);
    ok(&lrun_reg(
        &env,
        &reg,
        &env.scratch.join("none"),
        &[
            "layer",
            "publish",
            &url,
            big.to_str().unwrap(),
            other.to_str().unwrap(),
        ],
    ));

    // Through a proxy that cuts the first connection after 1 MiB: the pull resumes with
    // Range and every byte of the image crosses once.
    let proxy = Proxy::start(reg.port, 1 << 20);
    let via = format!("docker://127.0.0.1:{}/lrun/cut", proxy.port);
    let store = env.scratch.join("store");
    let v = pull_json(&env, &reg, &store, &via, &["big@1"]);
    assert_eq!(
        proxy.cuts.load(Ordering::SeqCst),
        1,
        "the proxy cut nothing"
    );
    assert_eq!(fetched(&v), ["big@1"]);
    assert_eq!(v["bytesFetched"], json!(size(&big)), "{v}");
    eprintln!(
        "cut pull: {} image bytes, {} bytes through the proxy (TLS, headers, manifests)",
        size(&big),
        proxy.down.load(Ordering::SeqCst)
    );
    assert!(fs::read_dir(store.join("partial")).unwrap().count() == 0);

    // A payload byte flipped in the registry's storage: refused, nothing kept.
    let data = fs::read(&other).unwrap();
    let blob = reg.blob_file(&sha_hex(&data));
    let mut stored = fs::read(&blob).unwrap();
    let at = stored.len() - 100;
    stored[at] ^= 0xff;
    fs::write(&blob, &stored).unwrap();
    let out = lrun_reg(&env, &reg, &store, &["layer", "pull", &url, "other@1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("rejected and removed") && err.contains("digest mismatch"),
        "{err}"
    );
    let names: Vec<_> = fs::read_dir(store.join("layers/sha256")).unwrap().collect();
    assert_eq!(names.len(), 1, "only big@1 is stored");
    assert!(fs::read_dir(store.join("partial")).unwrap().count() == 0);

    // A manifest that gives the blob another size than the image's header declares: refused
    // before any payload byte is stored.
    let small = pack(&env, "small", "1", 32 << 10, None, &[]);
    ok(&lrun_reg(
        &env,
        &reg,
        &env.scratch.join("none"),
        &["layer", "publish", &url, small.to_str().unwrap()],
    ));
    let curl = |args: &[&str]| -> Vec<u8> {
        let out = Command::new("curl")
            .args(["-sf", "--cacert", &format!("{}/ca.crt", reg.certs())])
            .args(["-u", &format!("{USER}:{PASS}")])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "curl {args:?}");
        out.stdout
    };
    let base = format!("https://127.0.0.1:{}/v2/lrun/cut/manifests", reg.port);
    let accept = "Accept: application/vnd.oci.image.manifest.v1+json";
    let mut m: Value =
        serde_json::from_slice(&curl(&["-H", accept, &format!("{base}/small_1")])).unwrap();
    let digest_tag = format!(
        "sha256-{}",
        m["annotations"]["org.lrun.layer.digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
    );
    m["layers"][0]["size"] = json!(m["layers"][0]["size"].as_u64().unwrap() * 2);
    let body = env.scratch.join("lying.json");
    fs::write(&body, m.to_string()).unwrap();
    for tag in ["small_1", &digest_tag] {
        curl(&[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary",
            &format!("@{}", body.display()),
            &format!("{base}/{tag}"),
        ]);
    }
    let out = lrun_reg(&env, &reg, &store, &["layer", "pull", &url, "small@1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("the manifest"), "{err}");
    assert_eq!(
        fs::read_dir(store.join("layers/sha256")).unwrap().count(),
        1
    );
    assert!(fs::read_dir(store.join("partial")).unwrap().count() == 0);
}

// ---------------------------------------------------------------------------------------
// OCI images: built here, pushed with skopeo, imported with `lrun image import docker://…`.

fn tar_of(files: &[(&str, &[u8])], with_rootfs: bool) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    if with_rootfs {
        b.follow_symlinks(false);
        b.append_dir_all(".", common::rootfs()).unwrap();
    }
    for (p, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, p, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd(dir: &Path, data: &[u8]) -> Vec<u8> {
    let p = dir.join("layer.tar");
    fs::write(&p, data).unwrap();
    run_ok(Command::new("zstd").args(["-q", "-f", "-3"]).arg(&p));
    let z = fs::read(p.with_extension("tar.zst")).unwrap();
    let _ = fs::remove_file(p.with_extension("tar.zst"));
    let _ = fs::remove_file(p);
    z
}

fn put_blob(layout: &Path, media: &str, data: &[u8]) -> Value {
    let hex = sha_hex(data);
    fs::write(layout.join("blobs/sha256").join(&hex), data).unwrap();
    json!({"mediaType": media, "digest": format!("sha256:{hex}"), "size": data.len()})
}

/// An OCI layout under `dir`: the busybox rootfs as a gzip layer, then a zstd layer with
/// /etc/msg; tagged "v1".
fn make_image(dir: &Path, msg: &str) -> PathBuf {
    make_image_with(dir, msg, true)
}

/// As `make_image`; the /etc/msg layer gzip'd rather than zstd'd when `zstd_top` is false.
fn make_image_with(dir: &Path, msg: &str, zstd_top: bool) -> PathBuf {
    let layout = new_layout(dir);
    let mut m = image_manifest(&layout, dir, msg, "amd64", zstd_top);
    m["annotations"] = json!({"org.opencontainers.image.ref.name": "v1"});
    write_index(&layout, m);
    layout
}

/// As `make_image`, but "v1" is an image index with one image per (architecture, message).
fn make_multi_arch_image(dir: &Path, images: &[(&str, &str)]) -> PathBuf {
    let layout = new_layout(dir);
    let manifests: Vec<Value> = images
        .iter()
        .map(|(arch, msg)| {
            let mut m = image_manifest(&layout, dir, msg, arch, true);
            m["platform"] = json!({"architecture": arch, "os": "linux"});
            m
        })
        .collect();
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                       "manifests": manifests});
    let mut m = put_blob(
        &layout,
        "application/vnd.oci.image.index.v1+json",
        index.to_string().as_bytes(),
    );
    m["annotations"] = json!({"org.opencontainers.image.ref.name": "v1"});
    write_index(&layout, m);
    layout
}

fn new_layout(dir: &Path) -> PathBuf {
    let layout = dir.join("oci");
    fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    layout
}

fn write_index(layout: &Path, m: Value) {
    fs::write(
        layout.join("index.json"),
        json!({"schemaVersion": 2, "manifests": [m]}).to_string(),
    )
    .unwrap();
}

/// The blobs of one image (busybox as gzip, /etc/msg as zstd); its manifest's descriptor.
fn image_manifest(layout: &Path, dir: &Path, msg: &str, arch: &str, zstd_top: bool) -> Value {
    let l1 = tar_of(&[], true);
    let l2 = tar_of(&[("etc/msg", msg.as_bytes())], false);
    let d1 = put_blob(
        layout,
        "application/vnd.oci.image.layer.v1.tar+gzip",
        &gzip(&l1),
    );
    let d2 = if zstd_top {
        put_blob(
            layout,
            "application/vnd.oci.image.layer.v1.tar+zstd",
            &zstd(dir, &l2),
        )
    } else {
        put_blob(
            layout,
            "application/vnd.oci.image.layer.v1.tar+gzip",
            &gzip(&l2),
        )
    };
    let config = json!({
        "architecture": arch, "os": "linux",
        "config": {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["cat /etc/msg"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha_hex(&l1)),
                                                   format!("sha256:{}", sha_hex(&l2))]},
    });
    let c = put_blob(
        layout,
        "application/vnd.oci.image.config.v1+json",
        config.to_string().as_bytes(),
    );
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                          "config": c, "layers": [d1, d2]});
    put_blob(
        layout,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    )
}

fn skopeo_push(reg: &Registry, layout: &Path, dest: &str) {
    run_ok(
        Command::new("skopeo")
            .args([
                "copy",
                "--all",
                "--quiet",
                "--dest-creds",
                &format!("{USER}:{PASS}"),
            ])
            .args(["--dest-cert-dir", &reg.certs()])
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(dest),
    );
}

#[test]
fn image_with_gzip_and_zstd_layers_imports_from_a_registry_and_runs() {
    let mut env = Env::new();
    let Some(reg) = Registry::start(&env) else {
        return;
    };
    let one = env.scratch.join("one");
    let two = env.scratch.join("two");
    fs::create_dir_all(&one).unwrap();
    fs::create_dir_all(&two).unwrap();
    skopeo_push(
        &reg,
        &make_image(&one, "hello from zstd\n"),
        &reg.url("img:v1"),
    );
    skopeo_push(
        &reg,
        &make_image(&two, "second image\n"),
        &reg.url("img:v2"),
    );

    let store = env.scratch.join("store");
    let bundle = env.scratch.join("bundle");
    let t = Instant::now();
    let out = import(
        &env,
        &reg,
        &store,
        &reg.url("img:v1"),
        "img@1",
        &bundle,
        &[],
    );
    eprintln!(
        "image import (2 layers): {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("oci-layer@") && lines[0].ends_with(" converted"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("img@1 ") && lines[1].ends_with(" converted"),
        "{out}"
    );
    assert_eq!(
        run_bundle(&mut env, &store, &bundle, "img"),
        "hello from zstd\n"
    );

    // The second image shares the base layer: only its own top is fetched and converted;
    // by digest (@sha256:…) as well as by tag.
    let manifest = Command::new("skopeo")
        .args(["inspect", "--raw", "--creds", &format!("{USER}:{PASS}")])
        .args(["--cert-dir", &reg.certs()])
        .arg(reg.url("img:v2"))
        .output()
        .unwrap();
    assert!(manifest.status.success());
    let by_digest = format!("{}@sha256:{}", reg.url("img"), sha_hex(&manifest.stdout));
    let bundle2 = env.scratch.join("bundle2");
    let out = import(&env, &reg, &store, &by_digest, "img@2", &bundle2, &[]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("oci-layer@") && lines[0].ends_with(" reused"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("img@2 ") && lines[1].ends_with(" converted"),
        "{out}"
    );
    assert_eq!(
        run_bundle(&mut env, &store, &bundle2, "img2"),
        "second image\n"
    );

    // A layer blob download cut short resumes (through a proxy that cuts once after
    // 256 KiB, into a fresh store so every blob is fetched).
    let proxy = Proxy::start(reg.port, 256 << 10);
    let via = format!("docker://127.0.0.1:{}/img:v1", proxy.port);
    let out = ok(&lrun_reg(
        &env,
        &reg,
        &env.scratch.join("store3"),
        &["image", "import", &via, "--name", "img", "--version", "1"],
    ));
    assert_eq!(
        proxy.cuts.load(Ordering::SeqCst),
        1,
        "the proxy cut nothing: {out}"
    );
    assert_eq!(out.matches(" converted").count(), 2, "{out}");

    // A multi-platform tag: the index is followed to linux/amd64 (this machine) by default,
    // to another platform with --platform.
    let three = env.scratch.join("three");
    fs::create_dir_all(&three).unwrap();
    let multi = make_multi_arch_image(
        &three,
        &[("arm64", "arm64 image\n"), ("amd64", "amd64 image\n")],
    );
    skopeo_push(&reg, &multi, &reg.url("multi:v1"));
    let bundle3 = env.scratch.join("bundle3");
    import(
        &env,
        &reg,
        &store,
        &reg.url("multi:v1"),
        "multi@1",
        &bundle3,
        &[],
    );
    if std::env::consts::ARCH == "x86_64" {
        assert_eq!(
            run_bundle(&mut env, &store, &bundle3, "multi"),
            "amd64 image\n"
        );
    }
    let bundle4 = env.scratch.join("bundle4");
    import(
        &env,
        &reg,
        &store,
        &reg.url("multi:v1"),
        "multi@arm",
        &bundle4,
        &["--platform", "linux/arm64"],
    );
    assert_eq!(
        run_bundle(&mut env, &store, &bundle4, "multiarm"),
        "arm64 image\n",
        "the arm64 image's files (busybox is this machine's)"
    );
    let out = lrun_reg(
        &env,
        &reg,
        &store,
        &[
            "image",
            "import",
            &reg.url("multi:v1"),
            "--name",
            "m",
            "--version",
            "1",
            "--platform",
            "linux/s390x",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no linux/s390x image"),
        "{err}"
    );

    // Docker's schema 2 (skopeo --format v2s2: Docker media types) imports the same way.
    let four = env.scratch.join("four");
    fs::create_dir_all(&four).unwrap();
    let layout = make_image_with(&four, "docker schema 2\n", false);
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--quiet", "--format", "v2s2"])
            .args([
                "--dest-creds",
                &format!("{USER}:{PASS}"),
                "--dest-cert-dir",
                &reg.certs(),
            ])
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(reg.url("docker:v1")),
    );
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--creds", &format!("{USER}:{PASS}")])
        .args(["--cert-dir", &reg.certs()])
        .arg(reg.url("docker:v1"))
        .output()
        .unwrap();
    let raw = String::from_utf8_lossy(&raw.stdout);
    assert!(
        raw.contains("application/vnd.docker.distribution.manifest.v2+json"),
        "{raw}"
    );
    let bundle5 = env.scratch.join("bundle5");
    import(
        &env,
        &reg,
        &store,
        &reg.url("docker:v1"),
        "dock@1",
        &bundle5,
        &[],
    );
    assert_eq!(
        run_bundle(&mut env, &store, &bundle5, "docker"),
        "docker schema 2\n"
    );

    // A tag the registry does not have.
    let out = lrun_reg(
        &env,
        &reg,
        &store,
        &[
            "image",
            "import",
            &reg.url("img:nope"),
            "--name",
            "x",
            "--version",
            "1",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no such image"),
        "{err}"
    );
}
