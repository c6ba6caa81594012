//! An OCI registry (the distribution API, `docker://HOST[:PORT]/REPO`) as a layer source, a
//! publish target and an image source.
//!
//! Layer images travel as OCI artifacts (runtime-spec/distribution.md "OCI registries"): one
//! manifest per image, its one blob the `.lrl` file, annotations naming it, tagged twice so
//! that both `NAME@VERSION` and a dependency's digest resolve. Blobs are fetched with `Range`
//! (headers alone, resumed downloads) under the pull's limits; the size the manifest gives
//! must be the size the verified header declares. Registries want authentication (Basic, or
//! a Bearer token from the realm a `WWW-Authenticate` challenge names) and TLS verified
//! against the system's CAs plus certs.d directories. This module is used by the CLI verbs
//! that move layers and images, never by the container start path on its own.

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use ureq::http::{Method, Request, Response};

use super::http::{header_str, open_response, range_response};
use super::limits::{Limits, Transfer, TransferError};
use super::{Body, LayerSource};
use crate::image::oci::{self, ImageSource, LayerFile, Platform, TempDir};
use crate::layers::header::{Digest, Header};
use crate::layers::store;

pub const PREFIX: &str = "docker://";
/// The artifact type of an lrun layer manifest (and its config's media type family).
pub const ARTIFACT_TYPE: &str = "application/vnd.lrun.layer.v1";
pub const CONFIG_TYPE: &str = "application/vnd.lrun.layer.config.v1+json";
/// The media type of the one blob: the `.lrl` file as it is.
pub const LAYER_TYPE: &str = "application/vnd.lrun.layer.v1.lrl";
pub const ANN_NAME: &str = "org.lrun.layer.name";
pub const ANN_VERSION: &str = "org.lrun.layer.version";
pub const ANN_DIGEST: &str = "org.lrun.layer.digest";
pub const ANN_DEPS: &str = "org.lrun.layer.dependencies";

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";
/// Manifests, image configs and token responses are small; more is not one of them.
const SMALL_MAX: u64 = 4 << 20;
/// Attempts per image layer blob download (resumed with Range after a cut).
const ATTEMPTS: usize = 4;

/// What a registry connection needs besides its address.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// `USER:PASS` (`--creds`); else the auth files (`credentials`).
    pub creds: Option<String>,
    /// certs.d-style directory of CA certificates (`*.crt`), trusted besides the system's.
    pub cert_dir: Option<PathBuf>,
    /// `--tls-verify=false`: accept any certificate (test registries only).
    pub tls_verify: bool,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            creds: None,
            cert_dir: None,
            tls_verify: true,
        }
    }
}

/// `docker://HOST[:PORT]/REPO[:TAG|@sha256:HEX]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub host: String,
    pub repo: String,
    /// A tag or `sha256:HEX`.
    pub reference: Option<String>,
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference> {
        let what = || format!("{s}: not docker://HOST[:PORT]/REPO[:TAG|@sha256:HEX]");
        let rest = s.strip_prefix(PREFIX).with_context(what)?;
        let (host, path) = rest.split_once('/').with_context(what)?;
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b".-:[]".contains(&c));
        if !host_ok {
            bail!("{}: bad host {host:?}", what());
        }
        let (repo, reference) = if let Some((r, d)) = path.split_once('@') {
            Digest::parse(d).with_context(|| format!("{s}: digest"))?;
            (r, Some(d.to_string()))
        } else {
            match path.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => {
                    if !valid_tag(t) {
                        bail!("{s}: tag {t:?} is not [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}");
                    }
                    (r, Some(t.to_string()))
                }
                _ => (path, None),
            }
        };
        let repo_ok = !repo.is_empty()
            && repo.split('/').all(|c| {
                !c.is_empty()
                    && c.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            });
        if !repo_ok {
            bail!("{s}: repository {repo:?}: lower-case letters, digits, '.', '_', '-', '/'");
        }
        Ok(Reference {
            host: host.to_string(),
            repo: repo.to_string(),
            reference,
        })
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PREFIX}{}/{}", self.host, self.repo)?;
        match &self.reference {
            Some(r) if r.starts_with("sha256:") => write!(f, "@{r}"),
            Some(t) => write!(f, ":{t}"),
            None => Ok(()),
        }
    }
}

/// The distribution spec's tag grammar.
pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

/// The tag that `NAME@VERSION` resolves through: `NAME_VERSION` when neither contains '_'
/// or '+', the name does not start with '-' and the whole fits 128 characters (so the one
/// '_' separates them unambiguously); otherwise `_` and the sha256 hex of "NAME@VERSION".
/// Both forms are disjoint from each other and from `digest_tag`'s (which has no '_').
pub fn name_tag(name: &str, version: &str) -> String {
    let plain = format!("{name}_{version}");
    let simple = |s: &str| !s.contains(['_', '+']);
    if simple(name) && simple(version) && !name.starts_with('-') && valid_tag(&plain) {
        return plain;
    }
    format!(
        "_{}",
        Digest::of(format!("{name}@{version}").as_bytes()).hex()
    )
}

/// The tag a layer image's digest resolves through: `sha256-<hex>`.
pub fn digest_tag(d: &Digest) -> String {
    format!("sha256-{}", d.hex())
}

/// USER:PASS for `host`: `--creds`, else the first auth file with an entry for it:
/// $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json,
/// $DOCKER_CONFIG/config.json or ~/.docker/config.json (what podman, skopeo and docker write).
pub fn credentials(host: &str, o: &RegistryOptions) -> Result<Option<(String, String)>> {
    if let Some(c) = &o.creds {
        let (u, p) = c.split_once(':').context("--creds: expected USER:PASS")?;
        return Ok(Some((u.to_string(), p.to_string())));
    }
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let home = env("HOME");
    let files = [
        env("REGISTRY_AUTH_FILE"),
        env("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")),
        home.as_ref()
            .map(|h| h.join(".config/containers/auth.json")),
        env("DOCKER_CONFIG")
            .map(|d| d.join("config.json"))
            .or_else(|| home.as_ref().map(|h| h.join(".docker/config.json"))),
    ];
    for f in files.into_iter().flatten() {
        let text = match std::fs::read(&f) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("read {}", f.display())),
        };
        let v: Value =
            serde_json::from_slice(&text).with_context(|| format!("parse {}", f.display()))?;
        if let Some(c) = auth_entry(&v, host).with_context(|| format!("{}", f.display()))? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// `auths[host].auth` (base64 of USER:PASS) of an auth file, also under docker's old
/// `https://host` keys.
fn auth_entry(v: &Value, host: &str) -> Result<Option<(String, String)>> {
    let auths = &v["auths"];
    let entry = [
        host.to_string(),
        format!("https://{host}"),
        format!("http://{host}"),
    ]
    .iter()
    .map(|k| &auths[k.as_str()])
    .find(|e| !e.is_null());
    let Some(auth) = entry.and_then(|e| e["auth"].as_str()) else {
        return Ok(None);
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .with_context(|| format!("auths.{host}.auth: not base64"))?;
    let text = String::from_utf8(raw).with_context(|| format!("auths.{host}.auth: not text"))?;
    let (u, p) = text
        .split_once(':')
        .with_context(|| format!("auths.{host}.auth: not USER:PASS"))?;
    Ok(Some((u.to_string(), p.to_string())))
}

/// TLS settings: the system's CA bundle plus the `*.crt` files of `--cert-dir` (default:
/// /etc/containers/certs.d/HOST and /etc/docker/certs.d/HOST, as podman and docker read).
fn tls_config(host: &str, o: &RegistryOptions) -> Result<ureq::tls::TlsConfig> {
    let b = ureq::tls::TlsConfig::builder();
    if !o.tls_verify {
        return Ok(b.disable_verification(true).build());
    }
    let mut certs = Vec::new();
    // Where Linux distributions keep the bundle (the list Go's crypto/x509 reads).
    let bundles = [
        std::env::var_os("SSL_CERT_FILE").map(PathBuf::from),
        Some("/etc/ssl/certs/ca-certificates.crt".into()),
        Some("/etc/pki/tls/certs/ca-bundle.crt".into()),
        Some("/etc/ssl/ca-bundle.pem".into()),
        Some("/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem".into()),
        Some("/etc/ssl/cert.pem".into()),
    ];
    if let Some(p) = bundles.into_iter().flatten().find(|p| p.is_file()) {
        add_pem(&mut certs, &p)?;
    }
    let dirs = match &o.cert_dir {
        Some(d) => {
            if !d.is_dir() {
                bail!("--cert-dir {}: not a directory", d.display());
            }
            vec![d.clone()]
        }
        None => vec![
            Path::new("/etc/containers/certs.d").join(host),
            Path::new("/etc/docker/certs.d").join(host),
        ],
    };
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut crts: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "crt"))
            .collect();
        crts.sort();
        for c in crts {
            add_pem(&mut certs, &c)?;
        }
    }
    if certs.is_empty() {
        // No system bundle and no certs.d: the bundled Mozilla roots.
        return Ok(b.build());
    }
    Ok(b.root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
        .build())
}

fn add_pem(certs: &mut Vec<ureq::tls::Certificate<'static>>, p: &Path) -> Result<()> {
    let pem = std::fs::read(p).with_context(|| format!("read {}", p.display()))?;
    for item in ureq::tls::parse_pem(&pem) {
        if let ureq::tls::PemItem::Certificate(c) =
            item.with_context(|| format!("parse {}", p.display()))?
        {
            certs.push(c);
        }
    }
    Ok(())
}

/// `KEY="VALUE",…` parameters of a `WWW-Authenticate` challenge, and its scheme.
fn parse_challenge(v: &str) -> (String, HashMap<String, String>) {
    let v = v.trim();
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    let mut params = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let Some((k, after)) = s.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (val, next) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (&q[..end], &q[end + 1..]),
                None => (q, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        params.insert(k, val.to_string());
        s = next.trim_start().trim_start_matches(',').trim_start();
    }
    (scheme.to_ascii_lowercase(), params)
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The HTTP client of a registry connection: statuses handled by the caller, the stall
/// timeout on connect and on every read, redirects followed (blob storage: S3, a CDN) with
/// the Authorization header kept only for the same host.
fn agent(stall: Duration, tls: ureq::tls::TlsConfig) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10).min(stall)))
        .timeout_per_read(Some(stall))
        .tls_config(tls)
        .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
        .build()
        .into()
}

/// A connection to one repository of one registry, authenticated on demand.
struct Client {
    agent: ureq::Agent,
    reference: Reference,
    base: String,
    creds: Option<(String, String)>,
    /// The Authorization header value once a challenge has been answered.
    auth: Mutex<Option<String>>,
    /// The token scope's actions: "pull" or "pull,push".
    actions: &'static str,
    transfer: Transfer,
}

impl Client {
    fn new(r: &Reference, o: &RegistryOptions, transfer: Transfer, push: bool) -> Result<Client> {
        Ok(Client {
            agent: agent(transfer.limits.stall, tls_config(&r.host, o)?),
            reference: r.clone(),
            base: format!("https://{}", r.host),
            creds: credentials(&r.host, o)?,
            auth: Mutex::new(None),
            actions: if push { "pull,push" } else { "pull" },
            transfer,
        })
    }

    fn repo_url(&self, rest: &str) -> String {
        format!("{}/v2/{}/{rest}", self.base, self.reference.repo)
    }

    fn describe(&self) -> String {
        let mut r = self.reference.clone();
        r.reference = None;
        r.to_string()
    }

    fn current_auth(&self) -> Option<String> {
        self.auth.lock().ok().and_then(|a| a.clone())
    }

    /// One request, with the pull's deadline over the whole exchange; a 401 is answered
    /// (`authenticate`) and the request made once more, with a fresh body from `body`.
    fn send<S: ureq::AsSendBody>(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        mut body: impl FnMut() -> Result<S>,
    ) -> Result<Response<ureq::Body>> {
        let mut answered = false;
        loop {
            let mut b = Request::builder().method(method.clone()).uri(url);
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            if let Some(a) = self.current_auth() {
                b = b.header("Authorization", a);
            }
            let req = b.body(body()?).with_context(|| format!("{method} {url}"))?;
            let left = self
                .transfer
                .time_left()
                .with_context(|| format!("{method} {url}"))?;
            let req = self
                .agent
                .configure_request(req)
                .timeout_global(left)
                .build();
            let r = self.agent.run(req).map_err(|e| {
                let hint = if matches!(e, ureq::Error::Rustls(_))
                    || e.to_string().contains("certificate")
                {
                    " (a private CA: --cert-dir DIR with its *.crt; a test registry: --tls-verify=false)"
                } else {
                    ""
                };
                anyhow::Error::new(e).context(format!("{method} {url}{hint}"))
            })?;
            if r.status().as_u16() != 401 || answered {
                if r.status().as_u16() == 401 {
                    bail!("{}", self.auth_failed(&format!("{method} {url}: HTTP 401")));
                }
                return Ok(r);
            }
            let challenge = header_str(r.headers(), "www-authenticate")
                .unwrap_or_default()
                .to_string();
            self.authenticate(&challenge)?;
            answered = true;
        }
    }

    fn auth_failed(&self, what: &str) -> String {
        match &self.creds {
            Some((u, _)) => format!(
                "{}: authentication failed as {u:?} ({what}): check --creds or the auth file",
                self.describe()
            ),
            None => format!(
                "{}: the registry wants credentials ({what}): give --creds USER:PASS or log in (podman login, skopeo login, docker login)",
                self.describe()
            ),
        }
    }

    fn basic(&self) -> Option<String> {
        self.creds.as_ref().map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        })
    }

    /// Answer a `WWW-Authenticate` challenge: Basic sends the credentials; Bearer fetches a
    /// token for this repository from the realm (with the credentials, if any).
    fn authenticate(&self, challenge: &str) -> Result<()> {
        let (scheme, params) = parse_challenge(challenge);
        let value = match scheme.as_str() {
            "basic" => match self.basic() {
                Some(b) => b,
                None => bail!("{}", self.auth_failed("HTTP 401, Basic")),
            },
            "bearer" => self.token(&params)?,
            _ => bail!(
                "{}: HTTP 401 with an unsupported challenge {challenge:?}",
                self.describe()
            ),
        };
        if let Ok(mut a) = self.auth.lock() {
            *a = Some(value);
        }
        Ok(())
    }

    fn token(&self, params: &HashMap<String, String>) -> Result<String> {
        let realm = params
            .get("realm")
            .with_context(|| format!("{}: a Bearer challenge without realm", self.describe()))?;
        if !realm.starts_with("https://") && !realm.starts_with("http://") {
            bail!("{}: Bearer realm {realm:?} is not a URL", self.describe());
        }
        if realm.starts_with("http://") && self.creds.is_some() {
            bail!(
                "{}: the Bearer realm {realm} is plain HTTP: credentials are sent only over HTTPS",
                self.describe()
            );
        }
        let scope = format!("repository:{}:{}", self.reference.repo, self.actions);
        let mut url = format!(
            "{realm}{}scope={}",
            if realm.contains('?') { '&' } else { '?' },
            percent_encode(&scope)
        );
        if let Some(s) = params.get("service") {
            url.push_str(&format!("&service={}", percent_encode(s)));
        }
        let mut req = self.agent.get(&url);
        if let Some(b) = self.basic() {
            req = req.header("Authorization", &b);
        }
        if let Some(left) = self.transfer.time_left().context("token")? {
            req = req.config().timeout_global(Some(left)).build();
        }
        let r = req.call().with_context(|| format!("GET {url}"))?;
        match r.status().as_u16() {
            200 => {}
            401 | 403 => bail!("{}", self.auth_failed(&format!("token from {realm}"))),
            s => bail!("GET {realm}: HTTP {s}"),
        }
        let v: Value = serde_json::from_slice(&self.read_small(r, &url)?)
            .with_context(|| format!("GET {realm}: the token response is not JSON"))?;
        let tok = v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .with_context(|| format!("GET {realm}: no token in the response"))?;
        Ok(format!("Bearer {tok}"))
    }

    fn read_small(&self, r: Response<ureq::Body>, url: &str) -> Result<Vec<u8>> {
        let (_, body) = r.into_parts();
        let mut buf = Vec::new();
        self.transfer
            .guard(body.into_reader(), url.to_string())
            .take(SMALL_MAX + 1)
            .read_to_end(&mut buf)
            .with_context(|| format!("GET {url}"))?;
        if buf.len() as u64 > SMALL_MAX {
            bail!("GET {url}: more than {SMALL_MAX} bytes");
        }
        Ok(buf)
    }

    fn get(&self, url: &str, headers: &[(&str, &str)]) -> Result<Response<ureq::Body>> {
        self.send(Method::GET, url, headers, || Ok(()))
    }

    /// A manifest's bytes and media type, by tag or digest; None if there is none. A
    /// manifest fetched by digest is checked against it.
    fn manifest(&self, reference: &str) -> Result<Option<(Vec<u8>, Option<String>)>> {
        let url = self.repo_url(&format!("manifests/{reference}"));
        let r = self.get(&url, &[("Accept", ACCEPT)])?;
        match r.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            s => bail!("GET {url}: HTTP {s}"),
        }
        let ctype = header_str(r.headers(), "content-type").map(|c| c.to_string());
        let bytes = self.read_small(r, &url)?;
        if let Some(hex) = reference.strip_prefix("sha256:")
            && Digest::of(&bytes).hex() != hex
        {
            bail!("GET {url}: content does not match its digest");
        }
        Ok(Some((bytes, ctype)))
    }

    /// A small blob (an image config), checked against its digest.
    fn small_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let url = self.repo_url(&format!("blobs/{d}"));
        let r = self.get(&url, &[])?;
        if r.status().as_u16() != 200 {
            bail!("GET {url}: HTTP {}", r.status().as_u16());
        }
        let bytes = self.read_small(r, &url)?;
        if Digest::of(&bytes) != *d {
            bail!("GET {url}: content does not match its digest");
        }
        Ok(bytes)
    }

    fn blob_exists(&self, d: &Digest) -> Result<bool> {
        let url = self.repo_url(&format!("blobs/{d}"));
        let r = self.send(Method::HEAD, &url, &[], || Ok(()))?;
        Ok(r.status().is_success())
    }

    /// Upload a blob monolithically: POST an upload session, PUT the bytes with the digest.
    fn upload<S: ureq::AsSendBody>(
        &self,
        d: &Digest,
        body: impl FnMut() -> Result<S>,
    ) -> Result<()> {
        let url = self.repo_url("blobs/uploads/");
        let r = self.send(Method::POST, &url, &[], || Ok(()))?;
        if r.status().as_u16() != 202 {
            bail!("POST {url}: HTTP {}", r.status().as_u16());
        }
        let loc = header_str(r.headers(), "location")
            .with_context(|| format!("POST {url}: no Location"))?;
        let mut put = if loc.starts_with("https://") || loc.starts_with("http://") {
            loc.to_string()
        } else if loc.starts_with('/') {
            format!("{}{loc}", self.base)
        } else {
            bail!("POST {url}: Location {loc:?} is not a URL or an absolute path");
        };
        put.push(if put.contains('?') { '&' } else { '?' });
        put.push_str(&format!("digest={}", percent_encode(&d.to_string())));
        // The body's length is known (a file, a Vec): ureq sends it as Content-Length.
        let r = self.send(
            Method::PUT,
            &put,
            &[("Content-Type", "application/octet-stream")],
            body,
        )?;
        if r.status().as_u16() != 201 {
            bail!("PUT {url}…: HTTP {}", r.status().as_u16());
        }
        Ok(())
    }

    fn put_manifest(&self, tag: &str, body: &[u8]) -> Result<()> {
        let url = self.repo_url(&format!("manifests/{tag}"));
        let r = self.send(Method::PUT, &url, &[("Content-Type", OCI_MANIFEST)], || {
            Ok(body.to_vec())
        })?;
        if !r.status().is_success() {
            let s = r.status().as_u16();
            let text = String::from_utf8_lossy(&self.read_small(r, &url).unwrap_or_default())
                .trim()
                .to_string();
            bail!("PUT {url}: HTTP {s} {text}");
        }
        Ok(())
    }

    fn blob_range(&self, blob: &Digest, range: Option<String>) -> Result<Response<ureq::Body>> {
        let url = self.repo_url(&format!("blobs/{blob}"));
        match &range {
            Some(r) => self.get(&url, &[("Range", r)]),
            None => self.get(&url, &[]),
        }
    }
}

/// What an lrun layer manifest says.
#[derive(Debug, Clone, PartialEq)]
struct LayerManifest {
    name: String,
    version: String,
    digest: Digest,
    blob: Digest,
    size: u64,
}

fn parse_layer_manifest(bytes: &[u8]) -> Result<LayerManifest> {
    let v: Value = serde_json::from_slice(bytes).context("parse the manifest")?;
    if v["config"]["mediaType"] != CONFIG_TYPE {
        bail!(
            "not an lrun layer manifest (config media type {}, want {CONFIG_TYPE})",
            v["config"]["mediaType"]
        );
    }
    let layers = v["layers"].as_array().context("manifest: no layers")?;
    let [l] = layers.as_slice() else {
        bail!("manifest: {} blobs, an lrun layer has one", layers.len());
    };
    let ann = |k: &str| {
        v["annotations"][k]
            .as_str()
            .map(|s| s.to_string())
            .with_context(|| format!("manifest: no annotation {k}"))
    };
    let blob = l["digest"]
        .as_str()
        .context("manifest: blob without digest")?;
    Ok(LayerManifest {
        name: ann(ANN_NAME)?,
        version: ann(ANN_VERSION)?,
        digest: Digest::parse(&ann(ANN_DIGEST)?).context("manifest: org.lrun.layer.digest")?,
        blob: Digest::parse(blob).context("manifest: blob digest")?,
        size: l["size"].as_u64().context("manifest: blob without size")?,
    })
}

/// The manifest and config of layer image `h` (digest `d`) whose file has sha256 `blob` and
/// `size` bytes: runtime-spec/distribution.md "OCI registries".
fn layer_manifest(h: &Header, d: &Digest, blob: &Digest, size: u64) -> (Vec<u8>, Vec<u8>) {
    let deps: Vec<Value> = h
        .deps
        .iter()
        .map(|x| json!({"name": x.name, "version": x.version, "digest": x.digest.to_string()}))
        .collect();
    let config = serde_json::to_vec(&json!({
        "name": h.name, "version": h.version, "digest": d.to_string(),
        "fs": h.fs.name(), "dependencies": deps,
    }))
    .unwrap_or_default();
    let dep_list: Vec<String> = h
        .deps
        .iter()
        .map(|x| format!("{}@{}={}", x.name, x.version, x.digest))
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": Digest::of(&config).to_string(),
                   "size": config.len()},
        "layers": [{"mediaType": LAYER_TYPE, "digest": blob.to_string(), "size": size,
                    "annotations": {"org.opencontainers.image.title":
                                    format!("{}-{}.lrl", h.name, h.version)}}],
        "annotations": {ANN_NAME: h.name, ANN_VERSION: h.version, ANN_DIGEST: d.to_string(),
                        ANN_DEPS: dep_list.join(",")},
    });
    (
        serde_json::to_vec_pretty(&manifest).unwrap_or_default(),
        config,
    )
}

/// `lrun layer publish docker://HOST/REPO FILE…`: each image verified, its blob and config
/// uploaded unless the registry has them, its manifest put under `name_tag` and
/// `digest_tag`. Returns (label, digest, whether the blob was uploaded) per file.
pub fn publish(
    target: &str,
    o: &RegistryOptions,
    limits: Limits,
    files: &[PathBuf],
) -> Result<Vec<(String, Digest, bool)>> {
    let r = Reference::parse(target)?;
    if r.reference.is_some() {
        bail!("publish {target}: name the repository only (tags come from each image)");
    }
    let c = Client::new(&r, o, Transfer::start(limits), true)?;
    let mut out = Vec::new();
    for f in files {
        let what = || format!("publish {} to {}", f.display(), c.describe());
        let (h, d) = store::verify(f).with_context(|| format!("layer image {}", f.display()))?;
        let (blob, size) = file_sha256(f)?;
        let new = !c.blob_exists(&blob).with_context(what)?;
        if new {
            c.upload(&blob, || {
                File::open(f).with_context(|| format!("open {}", f.display()))
            })
            .with_context(what)?;
        }
        let (manifest, config) = layer_manifest(&h, &d, &blob, size);
        let cd = Digest::of(&config);
        if !c.blob_exists(&cd).with_context(what)? {
            c.upload(&cd, || Ok(config.clone())).with_context(what)?;
        }
        for tag in [name_tag(&h.name, &h.version), digest_tag(&d)] {
            c.put_manifest(&tag, &manifest).with_context(what)?;
        }
        out.push((h.label(), d, new));
    }
    Ok(out)
}

fn file_sha256(p: &Path) -> Result<(Digest, u64)> {
    let mut f = File::open(p).with_context(|| format!("open {}", p.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f
            .read(&mut buf)
            .with_context(|| format!("read {}", p.display()))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((Digest(h.finalize().into()), n))
}

/// A repository of lrun layer artifacts as a `LayerSource`.
pub struct RegistrySource {
    client: Client,
    /// Layer digest → its manifest, as looked up.
    manifests: Mutex<HashMap<Digest, LayerManifest>>,
}

impl RegistrySource {
    pub fn new(s: &str, o: &RegistryOptions, transfer: Transfer) -> Result<RegistrySource> {
        let r = Reference::parse(s)?;
        if r.reference.is_some() {
            bail!("layer source {s}: name the repository only (docker://HOST[:PORT]/REPO)");
        }
        Ok(RegistrySource {
            client: Client::new(&r, o, transfer, false)?,
            manifests: Mutex::new(HashMap::new()),
        })
    }

    fn fetch_manifest(&self, tag: &str) -> Result<Option<LayerManifest>> {
        let Some((bytes, _)) = self.client.manifest(tag)? else {
            return Ok(None);
        };
        let m = parse_layer_manifest(&bytes)
            .with_context(|| format!("{} manifest {tag}", self.describe()))?;
        Ok(Some(m))
    }

    fn remember(&self, m: &LayerManifest) {
        if let Ok(mut c) = self.manifests.lock() {
            c.insert(m.digest, m.clone());
        }
    }

    /// The manifest of layer image `d`, from a lookup or through its digest tag.
    fn layer(&self, d: &Digest) -> Result<Option<LayerManifest>> {
        if let Some(m) = self.manifests.lock().ok().and_then(|c| c.get(d).cloned()) {
            return Ok(Some(m));
        }
        let Some(m) = self.fetch_manifest(&digest_tag(d))? else {
            return Ok(None);
        };
        if m.digest != *d {
            bail!(
                "{}: tag {} names layer {}, not {d}",
                self.describe(),
                digest_tag(d),
                m.digest
            );
        }
        self.remember(&m);
        Ok(Some(m))
    }
}

impl LayerSource for RegistrySource {
    fn describe(&self) -> String {
        self.client.describe()
    }

    fn lookup(&self, name: &str, version: &str) -> Result<Option<Digest>> {
        let tag = name_tag(name, version);
        let Some(m) = self.fetch_manifest(&tag)? else {
            return Ok(None);
        };
        if m.name != name || m.version != version {
            bail!(
                "{}: tag {tag} is {}@{}, not {name}@{version}",
                self.describe(),
                m.name,
                m.version
            );
        }
        self.remember(&m);
        Ok(Some(m.digest))
    }

    fn read_range(&self, d: &Digest, start: u64, len: usize) -> Result<Option<(Vec<u8>, u64)>> {
        let Some(m) = self.layer(d)? else {
            return Ok(None);
        };
        let last = start + len as u64 - 1;
        let r = self
            .client
            .blob_range(&m.blob, Some(format!("bytes={start}-{last}")))?;
        let url = self.client.repo_url(&format!("blobs/{}", m.blob));
        let got = range_response(r, &url, start, len, &self.client.transfer)?;
        if let Some((_, total)) = &got
            && *total != m.size
        {
            bail!("GET {url}: {total} bytes, the manifest says {}", m.size);
        }
        Ok(got)
    }

    fn open(&self, d: &Digest, offset: u64, total: u64) -> Result<Body> {
        let m = self
            .layer(d)?
            .with_context(|| format!("{}: no layer {d}", self.describe()))?;
        if m.size != total {
            return Err(anyhow::Error::new(TransferError::Refused(format!(
                "{}: the manifest of {d} says {} bytes, the header declares {total}",
                self.describe(),
                m.size
            ))));
        }
        let url = self.client.repo_url(&format!("blobs/{}", m.blob));
        let range = (offset > 0).then(|| format!("bytes={offset}-"));
        let r = self.client.blob_range(&m.blob, range)?;
        match open_response(r, &url, offset, total, &self.client.transfer)? {
            Some(b) => Ok(b),
            None => self.open(d, 0, total),
        }
    }
}

/// An image in a registry (`docker://HOST/REPO:TAG` or `@sha256:…`) as an `ImageSource`:
/// an index is followed to `platform`'s manifest; layer blobs are downloaded to private
/// temporary files (resumed with Range after a cut, the size the manifest gives enforced).
pub struct RegistryImage {
    client: Client,
    reference: String,
    platform: Platform,
}

impl RegistryImage {
    pub fn new(
        s: &str,
        o: &RegistryOptions,
        limits: Limits,
        platform: Platform,
    ) -> Result<RegistryImage> {
        let r = Reference::parse(s)?;
        let reference = r.reference.clone().unwrap_or_else(|| "latest".to_string());
        Ok(RegistryImage {
            client: Client::new(&r, o, Transfer::start(limits), false)?,
            reference,
            platform,
        })
    }

    fn download(&self, desc: &Descriptor, path: &Path) -> Result<()> {
        let d = oci::desc_sha256(desc)?;
        let total = desc.size();
        let url = self.client.repo_url(&format!("blobs/{d}"));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("create {}", path.display()))?;
        let mut last_err = None;
        for _ in 0..ATTEMPTS {
            let mut have = f.metadata().context("fstat")?.len();
            let range = (have > 0).then(|| format!("bytes={have}-"));
            let res = (|| -> Result<()> {
                let r = self.client.blob_range(&d, range)?;
                let Some(body) = open_response(r, &url, have, total, &self.client.transfer)? else {
                    bail!("GET {url}: range not satisfiable");
                };
                if !body.from_offset {
                    have = 0;
                }
                f.set_len(have).context("truncate")?;
                std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(have)).context("seek")?;
                let mut rd = body.reader.take(total - have);
                let n = std::io::copy(&mut rd, &mut f).with_context(|| format!("GET {url}"))?;
                if have + n != total {
                    bail!("GET {url}: transfer ended at byte {} of {total}", have + n);
                }
                Ok(())
            })();
            match res {
                Ok(()) => {
                    f.flush().ok();
                    return Ok(());
                }
                Err(e) if TransferError::find(&e).is_some() => return Err(e),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err
            .unwrap_or_else(|| anyhow::anyhow!("GET {url}"))
            .context(format!("giving up after {ATTEMPTS} attempts")))
    }
}

impl ImageSource for RegistryImage {
    fn image(&self) -> Result<(ImageManifest, ImageConfiguration)> {
        let what = || format!("{}:{}", self.client.describe(), self.reference);
        let (mut bytes, ctype) = self
            .client
            .manifest(&self.reference)?
            .with_context(|| format!("{}: no such image", what()))?;
        let v: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: parse the manifest", what()))?;
        let media = ctype
            .as_deref()
            .map(|c| c.split(';').next().unwrap_or("").trim().to_string());
        let media = v["mediaType"].as_str().map(|s| s.to_string()).or(media);
        if oci::is_index(media.as_deref(), &v) {
            let desc = oci::choose_platform(&bytes, &self.platform).with_context(what)?;
            let d = oci::desc_sha256(&desc)?;
            bytes = self
                .client
                .manifest(&d.to_string())?
                .with_context(|| format!("{}: no manifest {d}", what()))?
                .0;
        }
        let config_desc = oci::manifest_config(&bytes).with_context(what)?;
        let config = self.client.small_blob(&oci::desc_sha256(&config_desc)?)?;
        oci::parse_image(&bytes, &config).with_context(what)
    }

    fn layer(&self, desc: &Descriptor) -> Result<LayerFile> {
        let tmp = TempDir::new("blob")?;
        // A descriptor can claim any size: refuse one that cannot fit before writing a byte.
        let v =
            rustix::fs::statvfs(&tmp.0).with_context(|| format!("statvfs {}", tmp.0.display()))?;
        let free = v.f_bavail.saturating_mul(v.f_frsize);
        if desc.size() > free {
            bail!(
                "{}: layer {} is {} bytes, {} has {free} bytes free",
                self.client.describe(),
                desc.digest(),
                desc.size(),
                tmp.0.display()
            );
        }
        let path = tmp.0.join("blob");
        self.download(desc, &path)?;
        Ok(LayerFile {
            path,
            temp: Some(tmp),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        let r = Reference::parse("docker://127.0.0.1:5000/lrun/layers").unwrap();
        assert_eq!(
            (r.host.as_str(), r.repo.as_str()),
            ("127.0.0.1:5000", "lrun/layers")
        );
        assert_eq!(r.reference, None);
        let r = Reference::parse("docker://reg.example/app:v1.2").unwrap();
        assert_eq!(r.reference.as_deref(), Some("v1.2"));
        let d = Digest::of(b"x");
        let r = Reference::parse(&format!("docker://reg:5000/app@{d}")).unwrap();
        assert_eq!(r.reference, Some(d.to_string()));
        assert_eq!(r.to_string(), format!("docker://reg:5000/app@{d}"));
        for bad in [
            "reg/app",
            "docker://reg",
            "docker:///app",
            "docker://reg/App",
            "docker://reg/a//b",
            "docker://reg/app:-x",
            "docker://reg/app@sha256:12",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn name_tags_are_valid_and_distinct() {
        assert_eq!(name_tag("app", "1.0"), "app_1.0");
        let odd = [
            ("a_b", "1"),
            ("a", "1+x"),
            ("-a", "1"),
            ("a", &"9".repeat(130)),
        ];
        let mut seen = std::collections::HashSet::new();
        for (n, v) in odd {
            let t = name_tag(n, v);
            assert!(t.starts_with('_') && valid_tag(&t), "{t}");
            assert!(seen.insert(t));
        }
        let d = digest_tag(&Digest::of(b"x"));
        assert!(valid_tag(&d) && !d.contains('_'));
    }

    #[test]
    fn challenges_parse() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(
            (s.as_str(), p["realm"].as_str()),
            ("basic", "Registry Realm")
        );
    }

    #[test]
    fn auth_files_give_credentials() {
        let v = json!({"auths": {"reg:5000": {"auth": "dXNlcjpwYTpzcw=="}}});
        assert_eq!(
            auth_entry(&v, "reg:5000").unwrap(),
            Some(("user".to_string(), "pa:ss".to_string()))
        );
        assert_eq!(auth_entry(&v, "other").unwrap(), None);
        let v = json!({"auths": {"https://reg": {"auth": "dXNlcjpw"}}});
        assert_eq!(auth_entry(&v, "reg").unwrap().unwrap().0, "user");
        assert!(auth_entry(&json!({"auths": {"r": {"auth": "!!"}}}), "r").is_err());
    }

    #[test]
    fn layer_manifests_round_trip() {
        let d = Digest::of(b"layer");
        let h = Header {
            name: "app".into(),
            version: "2".into(),
            fs: crate::layers::header::FsType::Erofs,
            payload_offset: 4096,
            payload_len: 10,
            payload_digest: Digest::of(b"p"),
            deps: vec![crate::layers::header::Dep {
                name: "base".into(),
                version: "1".into(),
                digest: Digest::of(b"base"),
            }],
        };
        let blob = Digest::of(b"file");
        let (m, c) = layer_manifest(&h, &d, &blob, 4106);
        let got = parse_layer_manifest(&m).unwrap();
        assert_eq!(
            got,
            LayerManifest {
                name: "app".into(),
                version: "2".into(),
                digest: d,
                blob,
                size: 4106
            }
        );
        let v: Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(v["config"]["digest"], Digest::of(&c).to_string());
        assert!(
            v["annotations"][ANN_DEPS]
                .as_str()
                .unwrap()
                .starts_with("base@1=sha256:")
        );
    }

    /// One HTTP request read from `c` (headers only), lower-cased.
    fn read_request(c: &mut std::net::TcpStream) -> String {
        let mut buf = Vec::new();
        let mut b = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") && c.read(&mut b).unwrap_or(0) == 1 {
            buf.push(b[0]);
        }
        String::from_utf8_lossy(&buf).to_lowercase()
    }

    /// A registry redirecting a blob to storage on another host: the redirect is followed,
    /// and the registry's Authorization header is not sent there.
    #[test]
    fn redirects_to_another_host_drop_the_authorization() {
        let storage = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sport = storage.local_addr().unwrap().port();
        let reg = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let rport = reg.local_addr().unwrap().port();
        let r = std::thread::spawn(move || {
            let (mut c, _) = reg.accept().unwrap();
            let req = read_request(&mut c);
            // "localhost" is another host than "127.0.0.1" for the client.
            let _ = c.write_all(
                format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://localhost:{sport}/blob\r\nContent-Length: 0\r\n\r\n"
                )
                .as_bytes(),
            );
            req
        });
        let s = std::thread::spawn(move || {
            let (mut c, _) = storage.accept().unwrap();
            let req = read_request(&mut c);
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nblob");
            req
        });
        let a = agent(
            Duration::from_secs(5),
            ureq::tls::TlsConfig::builder().build(),
        );
        let mut resp = a
            .get(format!("http://127.0.0.1:{rport}/v2/r/blobs/x"))
            .header("Authorization", "Bearer secret-token")
            .call()
            .unwrap();
        assert_eq!(resp.body_mut().read_to_string().unwrap(), "blob");
        assert!(
            r.join()
                .unwrap()
                .contains("authorization: bearer secret-token")
        );
        let at_storage = s.join().unwrap();
        assert!(at_storage.starts_with("get /blob"), "{at_storage}");
        assert!(!at_storage.contains("authorization"), "{at_storage}");
    }

    #[test]
    fn a_plain_image_manifest_is_not_a_layer() {
        let m = json!({"schemaVersion": 2, "config": {"mediaType":
            "application/vnd.oci.image.config.v1+json"}, "layers": []});
        let e = parse_layer_manifest(&serde_json::to_vec(&m).unwrap()).unwrap_err();
        assert!(e.to_string().contains("not an lrun layer manifest"), "{e}");
    }
}
