//! The layers module against the real kernel: loop devices, erofs/squashfs mounts, overlayfs.
//! Needs root. Every test uses its own state root and store under /tmp/lrun-test-XXXXXX and
//! checks that nothing (mount, loop device, reference) is left behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use lrun::layers::header::{self, Dep, FsType};
use lrun::layers::{self, LayerContext, RootRecord, Store, loopdev, pack};

/// What the engine does with a container's root record: keep it in its state.json (here the
/// record alone), before anything is taken.
fn save_record(cdir: &Path, r: &RootRecord) -> anyhow::Result<()> {
    let data = serde_json::to_vec(&serde_json::json!({ "layers": r }))?;
    lrun::utils::write_atomic(&cdir.join("state.json"), &data, 0o600)
}

/// What `delete` does: release with the recorded root, then drop the record.
fn release_recorded(ctx: &LayerContext, cdir: &Path) -> anyhow::Result<()> {
    layers::release_root(ctx, cdir, lrun::state::recorded_root(cdir).as_ref())?;
    lrun::utils::remove_file_if_exists(&cdir.join("state.json"))
}

fn context(dir: &Path) -> LayerContext {
    LayerContext {
        store: dir.join("store"),
        state_root: dir.join("run"),
        recorded: lrun::state::recorded_root,
        idle: layers::IdlePolicy::NONE,
    }
}

struct Env {
    dir: PathBuf,
    ctx: LayerContext,
}

impl Env {
    fn new() -> Env {
        let dir = nix::unistd::mkdtemp("/tmp/lrun-test-XXXXXX").expect("mkdtemp");
        let ctx = context(&dir);
        fs::create_dir_all(&ctx.state_root).unwrap();
        // The state root is a tmpfs in production (/run/lrun); on this machine's busy ext4
        // /tmp, mkdir and create alone cost milliseconds each.
        nix::mount::mount(
            Some("tmpfs"),
            &ctx.state_root,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("mode=0711"),
        )
        .expect("mount tmpfs state root");
        Env { dir, ctx }
    }

    fn store(&self) -> Store {
        Store::new(&self.ctx.store)
    }

    /// Build a layer from `files` (path, content) and return the image path.
    fn pack(
        &self,
        name: &str,
        version: &str,
        files: &[(&str, &str)],
        deps: &[&Path],
        fs: FsType,
    ) -> PathBuf {
        let tree = self.dir.join(format!("tree-{name}-{version}"));
        for (p, c) in files {
            let f = tree.join(p);
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(&f, c).unwrap();
        }
        fs::create_dir_all(&tree).unwrap();
        let deps = deps
            .iter()
            .map(|p| {
                let (h, d) = header::read_header(p).unwrap();
                Dep {
                    name: h.name,
                    version: h.version,
                    digest: d,
                }
            })
            .collect();
        let out = self.dir.join(format!("{name}-{version}.lrl"));
        pack::pack(&pack::PackOptions {
            dir: &tree,
            name,
            version,
            deps,
            fs,
            compression: None,
            keep_owners: false,
            out: &out,
        })
        .unwrap();
        out
    }

    fn add(&self, p: &Path) {
        self.store().add(p).unwrap();
    }

    fn container(&self, id: &str) -> PathBuf {
        let d = self.ctx.state_root.join(id);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn prepare(&self, id: &str, layers: &str) -> anyhow::Result<Option<PathBuf>> {
        self.prepare_with(id, layers, false, None)
    }

    fn prepare_with(
        &self,
        id: &str,
        layers: &str,
        readonly: bool,
        upper: Option<&str>,
    ) -> anyhow::Result<Option<PathBuf>> {
        let cdir = self.container(id);
        let spec = spec(layers, readonly, upper);
        layers::prepare_root(&self.ctx, &self.dir, &spec, &cdir, &mut |r| {
            save_record(&cdir, r)
        })
    }

    fn release(&self, id: &str) {
        release_recorded(&self.ctx, &self.ctx.state_root.join(id)).unwrap();
    }

    /// Mounts under the test directory, except the state root's own tmpfs.
    fn mounts(&self) -> Vec<String> {
        let root = self.ctx.state_root.display().to_string();
        mounts_under(&self.dir)
            .into_iter()
            .filter(|m| *m != root)
            .collect()
    }

    fn loops(&self) -> usize {
        wait_loops(&self.ctx.store, 0).len()
    }

    /// Assert nothing is left: no mounts, no loop devices, no layer directories.
    fn assert_clean(&self) {
        assert_eq!(self.mounts(), Vec::<String>::new(), "mounts left");
        assert_eq!(self.loops(), 0, "loop devices left");
        let shared = self.ctx.state_root.join("@layers");
        if shared.exists() {
            let left: Vec<_> = fs::read_dir(&shared).unwrap().flatten().collect();
            panic!("{} left, holding {left:?}", shared.display());
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Best effort so a failed test does not leak into the next: release every container,
        // then detach anything still mounted under our directory, deepest first.
        if let Ok(rd) = fs::read_dir(&self.ctx.state_root) {
            for e in rd.flatten() {
                let _ = release_recorded(&self.ctx, &e.path());
            }
        }
        let mut m = mounts_under(&self.dir);
        m.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in m {
            let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn spec(layers: &str, readonly: bool, upper: Option<&str>) -> oci_spec::runtime::Spec {
    let mut ann = serde_json::Map::new();
    if !layers.is_empty() {
        ann.insert("org.lrun.layers".into(), layers.into());
    }
    if let Some(u) = upper {
        ann.insert("org.lrun.layers.upper".into(), u.into());
    }
    let v = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs", "readonly": readonly},
        "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "annotations": ann,
    });
    lrun::bundle::parse_config(v.to_string().as_bytes()).unwrap()
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let mi = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let prefix = format!("{}/", dir.display());
    mi.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// Loop devices backed by files under `dir`, waiting up to 2 s for the count to reach `want`
/// (AUTOCLEAR detaches asynchronously after the last unmount).
fn wait_loops(dir: &Path, want: usize) -> Vec<(String, PathBuf)> {
    let start = Instant::now();
    loop {
        let l = loopdev::devices_backed_by(dir).unwrap();
        if l.len() == want || start.elapsed() > Duration::from_secs(2) {
            return l;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// base <- mid <- top, each adding a file and top overriding one of base's.
fn three_layers(env: &Env, fs: FsType) -> (PathBuf, PathBuf, PathBuf) {
    let base = env.pack(
        "base",
        "1",
        &[
            ("etc/base", "base"),
            ("etc/shared", "from base"),
            ("etc/gone", "x"),
        ],
        &[],
        fs,
    );
    let mid = env.pack("mid", "1", &[("etc/mid", "mid")], &[&base], fs);
    let top = env.pack(
        "top",
        "1",
        &[("etc/top", "top"), ("etc/shared", "from top")],
        &[&mid],
        fs,
    );
    for p in [&base, &mid, &top] {
        env.add(p);
    }
    (base, mid, top)
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

#[test]
fn plain_bundle_gets_no_root() {
    let env = Env::new();
    assert!(env.prepare("plain", "").unwrap().is_none());
    env.release("plain");
    env.assert_clean();
}

#[test]
fn three_layers_merge_top_wins_and_release_leaves_nothing() {
    for fs in [FsType::Erofs, FsType::Squashfs] {
        let env = Env::new();
        three_layers(&env, fs);
        let merged = env.prepare("c1", "top@1").unwrap().unwrap();
        assert_eq!(read(&merged.join("etc/base")), "base");
        assert_eq!(read(&merged.join("etc/mid")), "mid");
        assert_eq!(read(&merged.join("etc/top")), "top");
        assert_eq!(read(&merged.join("etc/shared")), "from top");
        // erofs is mounted straight from the file; squashfs needs one loop device per layer.
        let want = if fs == FsType::Erofs { 0 } else { 3 };
        assert_eq!(wait_loops(&env.ctx.store, want).len(), want, "{fs:?}");
        assert_eq!(env.mounts().len(), 4, "3 layers + overlay");
        // Host users must not reach the container's setuid files through the state dir.
        let private = env.ctx.state_root.join("c1/root");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&private).unwrap().permissions().mode() & 0o777,
            0o700
        );
        env.release("c1");
        env.release("c1"); // idempotent
        env.assert_clean();
        assert!(!env.ctx.state_root.join("c1/state.json").exists());
        assert!(!private.exists());
    }
}

#[test]
fn file_deleted_in_upper_does_not_come_back() {
    let env = Env::new();
    three_layers(&env, FsType::Erofs);
    let merged = env.prepare("c1", "top@1").unwrap().unwrap();
    fs::remove_file(merged.join("etc/gone")).unwrap();
    fs::write(merged.join("etc/new"), "n").unwrap();
    assert!(!merged.join("etc/gone").exists());
    // Still in the shared read-only layer, hidden by a whiteout in this container's upper.
    let base_d = env
        .store()
        .lookup_label("base", "1")
        .unwrap()
        .unwrap()
        .hex();
    let shared = env.ctx.state_root.join("@layers").join(base_d).join("mnt");
    assert!(shared.join("etc/gone").exists());
    assert!(merged.join("etc/new").exists());
    env.release("c1");
    env.assert_clean();
}

#[test]
fn containers_sharing_layers_do_not_see_each_others_writes() {
    let env = Env::new();
    three_layers(&env, FsType::Erofs);
    let m1 = env.prepare("c1", "top@1").unwrap().unwrap();
    let m2 = env.prepare("c2", "top@1").unwrap().unwrap();
    fs::write(m1.join("etc/mine"), "c1").unwrap();
    fs::remove_file(m1.join("etc/base")).unwrap();
    assert!(!m2.join("etc/mine").exists());
    assert_eq!(read(&m2.join("etc/base")), "base");
    // One mount per layer, shared: 3 layer mounts + 2 overlays.
    assert_eq!(env.mounts().len(), 5);
    env.release("c1");
    assert_eq!(read(&m2.join("etc/mid")), "mid");
    assert_eq!(env.mounts().len(), 4);
    env.release("c2");
    env.assert_clean();
}

#[test]
fn thirty_two_concurrent_creates_share_five_loop_devices() {
    let env = Arc::new(Env::new());
    let mut prev: Vec<PathBuf> = Vec::new();
    for i in 0..5 {
        let deps: Vec<&Path> = prev.last().map(|p| p.as_path()).into_iter().collect();
        let img = env.pack(
            &format!("l{i}"),
            "1",
            &[(&format!("l/{i}"), "x")],
            &deps,
            FsType::Squashfs,
        );
        env.add(&img);
        prev.push(img);
    }
    let barrier = Arc::new(Barrier::new(32));
    let handles: Vec<_> = (0..32)
        .map(|i| {
            let env = env.clone();
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                let m = env.prepare(&format!("c{i}"), "l4@1").unwrap().unwrap();
                assert!(m.join("l/0").exists() && m.join("l/4").exists());
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(wait_loops(&env.ctx.store, 5).len(), 5);
    assert_eq!(env.mounts().len(), 5 + 32);
    let handles: Vec<_> = (0..32)
        .map(|i| {
            let env = env.clone();
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                env.release(&format!("c{i}"));
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    env.assert_clean();
}

#[test]
fn changing_only_the_top_layer_reuses_the_other_mounts() {
    let env = Env::new();
    let (_, mid, _) = three_layers(&env, FsType::Squashfs);
    let top2 = env.pack(
        "top",
        "2",
        &[("etc/top", "top2")],
        &[&mid],
        FsType::Squashfs,
    );
    env.add(&top2);
    let m1 = env.prepare("c1", "top@1").unwrap().unwrap();
    let loops_before = wait_loops(&env.ctx.store, 3);
    let m2 = env.prepare("c2", "top@2").unwrap().unwrap();
    assert_eq!(read(&m1.join("etc/top")), "top");
    assert_eq!(read(&m2.join("etc/top")), "top2");
    let loops_after = wait_loops(&env.ctx.store, 4);
    assert_eq!(loops_after.len(), 4, "only the new top layer is attached");
    for l in &loops_before {
        assert!(loops_after.contains(l), "{l:?} was re-attached");
    }
    let s = env.store();
    for n in ["base", "mid"] {
        let d = s.lookup_label(n, "1").unwrap().unwrap();
        let users = env
            .ctx
            .state_root
            .join("@layers")
            .join(d.hex())
            .join("users");
        let mut u: Vec<_> = fs::read_dir(users)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        u.sort();
        assert_eq!(u, ["c1", "c2"], "{n}");
    }
    env.release("c1");
    env.release("c2");
    env.assert_clean();
}

#[test]
fn hundred_layer_stack_works() {
    let env = Env::new();
    let mut imgs: Vec<PathBuf> = Vec::new();
    for i in 0..99 {
        let deps: Vec<&Path> = imgs.last().map(|p| p.as_path()).into_iter().collect();
        let img = env.pack(
            &format!("layer-with-a-long-name-{i:03}"),
            "0123456789abcdef0123456789abcdef01234567",
            &[(&format!("l/{i}"), "x"), ("which", &i.to_string())],
            &deps,
            FsType::Erofs,
        );
        env.add(&img);
        imgs.push(img);
    }
    // The top depends on all 99 directly: a header longer than one page.
    let all: Vec<&Path> = imgs.iter().map(|p| p.as_path()).collect();
    let top = env.pack("top", "1", &[("which", "top")], &all, FsType::Erofs);
    assert_eq!(
        header::read_header(&top).unwrap().0.payload_offset,
        4 * 4096
    );
    env.add(&top);
    let t = Instant::now();
    let m = env.prepare("c1", "top@1").unwrap().unwrap();
    eprintln!("100-layer prepare_root: {:?}", t.elapsed());
    assert_eq!(read(&m.join("which")), "top");
    for i in [0, 50, 98] {
        assert!(m.join(format!("l/{i}")).exists(), "l/{i}");
    }
    assert_eq!(env.mounts().len(), 101);
    env.release("c1");
    env.assert_clean();
}

#[test]
fn readonly_root_has_no_upper() {
    let env = Env::new();
    three_layers(&env, FsType::Erofs);
    let m = env
        .prepare_with("c1", "top@1", true, None)
        .unwrap()
        .unwrap();
    let err = fs::write(m.join("etc/x"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    assert!(!env.ctx.state_root.join("c1/root/rw").exists());
    env.release("c1");
    env.assert_clean();
}

#[test]
fn tmpfs_upper_is_a_mount_of_its_own() {
    let env = Env::new();
    three_layers(&env, FsType::Erofs);
    let m = env
        .prepare_with("c1", "top@1", false, Some("tmpfs,size=1m"))
        .unwrap()
        .unwrap();
    fs::write(m.join("etc/x"), "x").unwrap();
    // The overlay holds the tmpfs: the host's namespace does not list it (it was mounted
    // there only to make upper/ and work/), and upper/ is empty on the host's rw/.
    let rw = env.ctx.state_root.join("c1/root/rw");
    assert!(!env.mounts().contains(&rw.display().to_string()));
    assert!(!rw.join("upper/etc").exists());
    // The size limit applies to the container's writes: they go to a tmpfs of its own.
    let big = vec![0u8; 2 << 20];
    assert!(fs::write(m.join("big"), big).is_err());
    env.release("c1");
    env.assert_clean();
}

#[test]
fn layers_by_path_and_digest_are_imported_and_resolved() {
    let env = Env::new();
    let base = env.pack("base", "1", &[("a", "a")], &[], FsType::Erofs);
    let top = env.pack("top", "1", &[("b", "b")], &[&base], FsType::Erofs);
    env.add(&base);
    // The bundle names the top by a path relative to the bundle dir: imported on first use.
    let rel = top.file_name().unwrap().to_str().unwrap().to_string();
    let m = env.prepare("c1", &rel).unwrap().unwrap();
    assert!(m.join("a").exists() && m.join("b").exists());
    let (_, d) = header::read_header(&top).unwrap();
    assert!(env.store().image_path(&d).exists());
    let m2 = env.prepare("c2", &format!("[\"{d}\"]")).unwrap().unwrap();
    assert!(m2.join("b").exists());
    env.release("c1");
    env.release("c2");
    env.assert_clean();
}

/// Each bad input: one clear error, nothing mounted, nothing referenced.
#[test]
fn bad_images_are_rejected_with_one_clear_error() {
    let env = Env::new();
    let good = env.pack("good", "1", &[("a", "a")], &[], FsType::Erofs);
    let bytes = fs::read(&good).unwrap();
    let bad = |name: &str, data: &[u8]| {
        let p = env.dir.join(name);
        fs::write(&p, data).unwrap();
        p
    };
    let mut cases: Vec<(PathBuf, &str)> = Vec::new();
    cases.push((bad("trunc-header.lrl", &bytes[..100]), "truncated"));
    cases.push((
        bad("trunc-payload.lrl", &bytes[..bytes.len() - 4096]),
        "past the end",
    ));
    let mut b = bytes.clone();
    b[0] = b'Z';
    cases.push((bad("magic.lrl", &b), "wrong magic"));
    let mut b = bytes.clone();
    b[110] ^= 0x20; // inside the name
    cases.push((bad("hdrsum.lrl", &b), "header checksum"));
    let mut b = bytes.clone();
    let last = b.len() - 1;
    b[last] ^= 0xff;
    cases.push((bad("payload.lrl", &b), "payload digest mismatch"));
    // A consistent header that claims squashfs for an erofs payload.
    let (mut h, _) = header::read_header(&good).unwrap();
    h.fs = FsType::Squashfs;
    let (hb, _) = h.encode().unwrap();
    let mut b = bytes.clone();
    b[..hb.len()].copy_from_slice(&hb);
    cases.push((bad("notsquash.lrl", &b), "not a squashfs"));
    // Payload length pointing past the end of the file.
    let (mut h, _) = header::read_header(&good).unwrap();
    h.payload_len += 4096;
    let (hb, _) = h.encode().unwrap();
    let mut b = bytes.clone();
    b[..hb.len()].copy_from_slice(&hb);
    cases.push((bad("offlen.lrl", &b), "past the end"));

    let store = env.store();
    for (p, want) in &cases {
        let e = format!("{:#}", store.add(p).unwrap_err());
        assert!(e.contains(want), "{}: {e}", p.display());
        assert_eq!(e.lines().count(), 1, "{e}");
        // The same through a bundle that names the file.
        let id = p.file_stem().unwrap().to_str().unwrap();
        let e = format!("{:#}", env.prepare(id, p.to_str().unwrap()).unwrap_err());
        assert!(e.contains(want), "{}: {e}", p.display());
        // Refused before anything was recorded (hence taken).
        assert!(!env.ctx.state_root.join(id).join("state.json").exists());
    }
    assert!(
        store.list().unwrap().is_empty(),
        "a bad image entered the store"
    );
    let tmp_left: Vec<_> = fs::read_dir(env.ctx.store.join("tmp")).unwrap().collect();
    assert!(tmp_left.is_empty());

    // A dependency that is not in the store: named, with who needs it.
    let dep = env.pack("dep", "7", &[("d", "d")], &[], FsType::Erofs);
    let app = env.pack("app", "1", &[("x", "x")], &[&dep], FsType::Erofs);
    env.add(&app);
    let e = format!("{:#}", env.prepare("c-missing", "app@1").unwrap_err());
    assert!(
        e.contains("1 missing layer: dep@7") && e.contains("needed by app@1"),
        "{e}"
    );
    let e = format!("{:#}", env.prepare("c-none", "nope@1").unwrap_err());
    assert!(e.contains("nope@1"), "{e}");
    env.assert_clean();
}

#[test]
fn a_failing_mount_midway_leaves_nothing() {
    let env = Env::new();
    let (_, _, _) = three_layers(&env, FsType::Squashfs);
    // Corrupt the bottom layer's payload in the store after import: its mount fails after the
    // layers above were already mounted and referenced.
    let d = env.store().lookup_label("base", "1").unwrap().unwrap();
    let img = env.store().image_path(&d);
    let mut b = fs::read(&img).unwrap();
    let (h, _) = header::read_header(&img).unwrap();
    let off = h.payload_offset as usize;
    b[off..off + 4].copy_from_slice(b"XXXX");
    fs::remove_file(&img).unwrap();
    fs::write(&img, &b).unwrap();
    // Read-only like the store's own files, so only the mount notices (not the ownership check).
    fs::set_permissions(&img, std::os::unix::fs::PermissionsExt::from_mode(0o444)).unwrap();
    let e = format!("{:#}", env.prepare("c1", "top@1").unwrap_err());
    assert!(e.contains("mount layer base@1"), "{e}");
    env.assert_clean();
}

/// A reference file gc cannot read is an error naming it, never "stale": treating it as
/// stale would unmount the layer under the container holding it.
#[test]
fn unreadable_reference_stops_gc_instead_of_unmounting() {
    let env = Env::new();
    three_layers(&env, FsType::Erofs);
    env.prepare("c1", "top@1").unwrap().unwrap();
    let users = fs::read_dir(env.ctx.state_root.join("@layers"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path()
        .join("users");
    // c1's only reference on this layer, made unreadable: read(2) through a symlink to a
    // directory fails (EISDIR), even as root; unlinking it would succeed.
    let mine = users.join("c1");
    let content = fs::read(&mine).unwrap();
    fs::remove_file(&mine).unwrap();
    std::os::unix::fs::symlink("/", &mine).unwrap();
    let e = format!("{:#}", layers::gc_mounts(&env.ctx, false).unwrap_err());
    assert!(e.contains(&mine.display().to_string()), "{e}");
    assert_eq!(env.mounts().len(), 4, "3 layers + overlay stay mounted");
    fs::remove_file(&mine).unwrap();
    fs::write(&mine, content).unwrap();
    env.release("c1");
    env.assert_clean();
}

/// Containers created before the root record moved into state.json keep it in layers.json:
/// delete (release without a record) and gc still find it.
#[test]
fn legacy_layers_json_is_still_released() {
    let env = Env::new();
    three_layers(&env, FsType::Erofs);
    let cdir = env.container("old");
    let spec = spec("top@1", false, None);
    layers::prepare_root(&env.ctx, &env.dir, &spec, &cdir, &mut |r| {
        let data = serde_json::to_vec(r)?;
        lrun::utils::write_atomic(&cdir.join("layers.json"), &data, 0o600)
    })
    .unwrap()
    .unwrap();
    assert_eq!(lrun::state::recorded_root(&cdir).unwrap().layers.len(), 3);
    // gc sees the references as live.
    assert_eq!(layers::gc_mounts(&env.ctx, false).unwrap(), (0, 0));
    layers::release_root(&env.ctx, &cdir, None).unwrap();
    assert!(!cdir.join("layers.json").exists());
    env.assert_clean();
}

#[test]
fn crash_leftovers_are_cleaned_by_release_and_gc() {
    let env = Env::new();
    three_layers(&env, FsType::Erofs);
    // A creator that died after taking its references but before mounting the overlay:
    // its root record and users/<id> files exist, the overlay does not.
    env.prepare("c1", "top@1").unwrap().unwrap();
    nix::mount::umount2(
        &env.ctx.state_root.join("c1/root/merged"),
        nix::mount::MntFlags::MNT_DETACH,
    )
    .unwrap();
    env.release("c1");
    env.assert_clean();

    // A container whose state dir vanished without release (e.g. removed by hand): its
    // references are stale; gc drops them and unmounts the layers.
    let m = env.prepare("c2", "top@1").unwrap().unwrap();
    nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH).unwrap();
    fs::remove_dir_all(env.ctx.state_root.join("c2")).unwrap();
    assert_eq!(env.mounts().len(), 3);
    let r = layers::gc_with(&env.ctx, true).unwrap();
    assert_eq!(r.stale_references, 0, "dry run changes nothing");
    let r = layers::gc(&env.ctx).unwrap();
    assert_eq!(r.stale_references, 3);
    assert_eq!(r.unmounted, 3);
    // Nothing in use any more: gc also empties the store.
    assert_eq!(r.removed.len(), 3);
    env.assert_clean();
}

#[test]
fn gc_keeps_layers_in_use_and_their_dependencies() {
    let env = Env::new();
    let (_, mid, _) = three_layers(&env, FsType::Erofs);
    let other = env.pack("other", "1", &[("o", "o")], &[&mid], FsType::Erofs);
    let lone = env.pack("lone", "1", &[("o", "o")], &[], FsType::Erofs);
    env.add(&other);
    env.add(&lone);
    env.prepare("c1", "top@1").unwrap().unwrap();
    // rm refuses what is in use or needed.
    let base = layers::LayerRef::parse("base@1").unwrap();
    let e = format!(
        "{:#}",
        layers::remove(&env.ctx, &[base], false).unwrap_err()
    );
    assert!(e.contains("used by a container"), "{e}");
    let r = layers::gc(&env.ctx).unwrap();
    let mut removed: Vec<_> = r
        .removed
        .iter()
        .map(|s| s.split(' ').next().unwrap().to_string())
        .collect();
    removed.sort();
    assert_eq!(removed, ["lone@1", "other@1"]);
    assert_eq!(env.store().list().unwrap().len(), 3);
    env.release("c1");
    env.assert_clean();
}

#[test]
fn stack_above_the_kernel_limit_is_refused_before_mounting() {
    // A pure check: mounting 501 layers would need 501 images; the limit is enforced by the
    // closure and overlay code before any mount.
    let lowers: Vec<PathBuf> = (0..501).map(|i| PathBuf::from(format!("/x/{i}"))).collect();
    let e = format!(
        "{:#}",
        lrun::layers::overlay::mount(&lowers, None, Path::new("/nonexistent")).unwrap_err()
    );
    assert!(e.contains("at most 500"), "{e}");
}

/// Walk a tree reading every regular file; returns bytes read.
fn read_tree(p: &Path) -> u64 {
    let mut n = 0;
    let Ok(rd) = fs::read_dir(p) else { return 0 };
    for e in rd.flatten() {
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            n += read_tree(&e.path());
        } else if t.is_file() {
            n += fs::read(e.path()).map(|b| b.len() as u64).unwrap_or(0);
        }
    }
    n
}

/// Drop one file's page cache only (not the machine's): a fresh mount then reads cold.
fn evict(p: &Path) {
    let f = fs::File::open(p).unwrap();
    nix::fcntl::posix_fadvise(
        &f,
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .unwrap();
}

/// Measures what the default filesystem is chosen on: mount (prepare_root of one layer)
/// and cold/warm reads of a real tree. Run with
/// `LRUN_BENCH_TREE=/usr/lib/python3.11 cargo test --release --test layers bench -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_filesystems() {
    let Some(tree) = std::env::var_os("LRUN_BENCH_TREE") else {
        lrun::test_support::skip("set LRUN_BENCH_TREE");
        return;
    };
    let tree = PathBuf::from(tree);
    let env = Env::new();
    let variants: [(&str, FsType, &str, bool, bool); 7] = [
        (
            "erofs none, file-backed",
            FsType::Erofs,
            "none",
            false,
            true,
        ),
        (
            "erofs lz4hc, file-backed",
            FsType::Erofs,
            "lz4hc",
            false,
            true,
        ),
        ("erofs lz4hc, loop dio", FsType::Erofs, "lz4hc", true, true),
        ("erofs lz4hc, loop", FsType::Erofs, "lz4hc", true, false),
        (
            "squashfs zstd,3, loop dio",
            FsType::Squashfs,
            "zstd,3",
            false,
            true,
        ),
        (
            "squashfs zstd,3, loop",
            FsType::Squashfs,
            "zstd,3",
            false,
            false,
        ),
        ("squashfs lz4, loop", FsType::Squashfs, "lz4", false, false),
    ];
    eprintln!(
        "| image | build s | size MB | prepare_root cold ms | prepare_root warm ms | cold read s | warm read s |"
    );
    eprintln!("|---|---|---|---|---|---|---|");
    for (i, (label, fs, comp, force_loop, dio)) in variants.into_iter().enumerate() {
        let out = env.dir.join(format!("bench{i}.lrl"));
        let t = Instant::now();
        pack::pack(&pack::PackOptions {
            dir: &tree,
            name: "bench",
            version: &i.to_string(),
            deps: vec![],
            fs,
            compression: Some(comp),
            keep_owners: false,
            out: &out,
        })
        .unwrap();
        let build = t.elapsed();
        let size = fs::metadata(&out).unwrap().len();
        let (d, _, _) = env.store().add(&out).unwrap();
        let img = env.store().image_path(&d);
        // SAFETY (set_var): this ignored benchmark runs alone, single-threaded.
        unsafe {
            std::env::set_var("LRUN_LOOP_DIRECT_IO", if dio { "1" } else { "0" });
            if force_loop {
                std::env::set_var("LRUN_EROFS_BACKING", "loop");
            } else {
                std::env::remove_var("LRUN_EROFS_BACKING");
            }
        }
        let mut mounts = Vec::new();
        let mut remounts = Vec::new();
        let (mut cold, mut warm) = (Duration::MAX, Duration::MAX);
        for run in 0..5 {
            // Mount with the image's page cache warm (as for a node's second container after
            // the first was deleted), then cold.
            let id = format!("w{i}-{run}");
            let t = Instant::now();
            env.prepare_with(&id, &d.to_string(), true, None)
                .unwrap()
                .unwrap();
            remounts.push(t.elapsed());
            env.release(&id);
            evict(&img);
            let id = format!("b{i}-{run}");
            let t = Instant::now();
            let m = env
                .prepare_with(&id, &d.to_string(), true, None)
                .unwrap()
                .unwrap();
            mounts.push(t.elapsed());
            let t = Instant::now();
            let n = read_tree(&m);
            cold = cold.min(t.elapsed());
            let t = Instant::now();
            assert_eq!(read_tree(&m), n);
            warm = warm.min(t.elapsed());
            env.release(&id);
        }
        mounts.sort();
        remounts.sort();
        eprintln!(
            "| {label} | {:.2} | {:.1} | {:.2} | {:.2} | {:.3} | {:.3} |",
            build.as_secs_f64(),
            size as f64 / 1e6,
            mounts[mounts.len() / 2].as_secs_f64() * 1e3,
            remounts[remounts.len() / 2].as_secs_f64() * 1e3,
            cold.as_secs_f64(),
            warm.as_secs_f64()
        );
    }
    unsafe {
        std::env::remove_var("LRUN_EROFS_BACKING");
        std::env::remove_var("LRUN_LOOP_DIRECT_IO");
    }
    env.assert_clean();
}

/// Helper process for `sigkill_at_any_point_is_recovered_by_release`: prepares and releases
/// one container in a loop until killed. Does nothing unless LRUN_TEST_CHILD_DIR is set.
#[test]
#[ignore]
fn child_prepare_release_loop() {
    let Some(dir) = std::env::var_os("LRUN_TEST_CHILD_DIR") else {
        lrun::test_support::skip("a helper process: runs only with LRUN_TEST_CHILD_DIR set");
        return;
    };
    let dir = PathBuf::from(dir);
    let ctx = context(&dir);
    let id = std::env::var("LRUN_TEST_CHILD_ID").unwrap_or_else(|_| "victim".into());
    let iterations: u64 = std::env::var("LRUN_TEST_CHILD_ITER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    let cdir = ctx.state_root.join(id);
    fs::create_dir_all(&cdir).unwrap();
    let spec = spec("top@1", false, None);
    for _ in 0..iterations {
        let m = layers::prepare_root(&ctx, &dir, &spec, &cdir, &mut |r| save_record(&cdir, r))
            .unwrap()
            .unwrap();
        assert!(m.join("etc/base").exists());
        release_recorded(&ctx, &cdir).unwrap();
    }
}

#[test]
fn concurrent_processes_keep_reference_counts_right() {
    let env = Env::new();
    three_layers(&env, FsType::Squashfs);
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..8)
        .map(|i| {
            std::process::Command::new(&exe)
                .args(["--exact", "child_prepare_release_loop", "--ignored"])
                .env("LRUN_TEST_CHILD_DIR", &env.dir)
                .env("LRUN_TEST_CHILD_ID", format!("p{i}"))
                .env("LRUN_TEST_CHILD_ITER", "25")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    env.assert_clean();
}

#[test]
fn sigkill_at_any_point_is_recovered_by_release() {
    let env = Env::new();
    let (_, mid, _) = three_layers(&env, FsType::Squashfs);
    // More layers, so kills land inside the acquire loop too.
    let mut prev = mid;
    for i in 0..8 {
        let img = env.pack(
            &format!("x{i}"),
            "1",
            &[("x", "x")],
            &[&prev],
            FsType::Squashfs,
        );
        env.add(&img);
        prev = img;
    }
    let top = env.pack("top", "1", &[("t", "t")], &[&prev], FsType::Erofs);
    env.add(&top);
    let exe = std::env::current_exe().unwrap();
    let cdir = env.ctx.state_root.join("victim");
    for delay_ms in [2u64, 5, 9, 13, 17, 23, 29, 37, 45, 60, 75, 95, 130] {
        let mut child = std::process::Command::new(&exe)
            .args([
                "--exact",
                "child_prepare_release_loop",
                "--ignored",
                "--nocapture",
            ])
            .env("LRUN_TEST_CHILD_DIR", &env.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        eprintln!(
            "killed after {delay_ms} ms: root record {}, {} mounts",
            cdir.join("state.json").exists(),
            env.mounts().len()
        );
        // What `delete --force` does, then nothing may remain.
        release_recorded(&env.ctx, &cdir).unwrap();
        assert!(!cdir.join("state.json").exists());
        env.assert_clean();
    }
}

#[test]
fn legacy_overlay_fallback_stacks_and_refuses_options_over_a_page() {
    let env = Env::new();
    let base = env.ctx.state_root.join("legacy");
    let mut lowers = Vec::new();
    for i in 0..3 {
        let d = base.join(format!("l{i}"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("which"), i.to_string()).unwrap();
        fs::write(d.join(format!("only{i}")), "x").unwrap();
        lowers.push(d);
    }
    let (u, w, m) = (base.join("u"), base.join("w"), base.join("m"));
    for d in [&u, &w, &m] {
        fs::create_dir_all(d).unwrap();
    }
    let up = layers::overlay::Upper {
        upper: &u,
        work: &w,
    };
    layers::overlay::mount_legacy_api(&lowers, Some(up), &m).unwrap();
    assert_eq!(read(&m.join("which")), "0", "first lower is the top-most");
    assert!(m.join("only2").exists());
    fs::write(m.join("new"), "n").unwrap();
    assert!(u.join("new").exists());
    nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH).unwrap();

    let long: Vec<PathBuf> = (0..60)
        .map(|i| base.join(format!("{}{i}", "x".repeat(80))))
        .collect();
    for d in &long {
        fs::create_dir_all(d).unwrap();
    }
    let e = format!(
        "{:#}",
        layers::overlay::mount_legacy_api(&long, None, &m).unwrap_err()
    );
    assert!(e.contains("over the 4095") && e.contains("6.8"), "{e}");
    // The new API takes the same stack.
    layers::overlay::mount(&long, None, &m).unwrap();
    nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH).unwrap();
    env.assert_clean();
}

#[test]
fn legacy_loop_attach_serves_the_payload_range() {
    let env = Env::new();
    let img = env.pack("sq", "1", &[("f", "payload")], &[], FsType::Squashfs);
    let (h, _) = header::read_header(&img).unwrap();
    for legacy in [false, true] {
        let backing: std::os::fd::OwnedFd = fs::File::open(&img).unwrap().into();
        let dev =
            loopdev::attach_with(&backing, &img, h.payload_offset, h.payload_len, legacy).unwrap();
        let name = dev.path.file_name().unwrap().to_str().unwrap().to_string();
        let sys = |f: &str| {
            fs::read_to_string(format!("/sys/block/{name}/loop/{f}"))
                .unwrap()
                .trim()
                .to_string()
        };
        assert_eq!(sys("offset"), h.payload_offset.to_string());
        assert_eq!(sys("sizelimit"), h.payload_len.to_string());
        assert_eq!(sys("autoclear"), "1");
        assert_eq!(
            fs::read_to_string(format!("/sys/block/{name}/ro"))
                .unwrap()
                .trim(),
            "1"
        );
        let m = env.ctx.state_root.join(format!("m{legacy}"));
        fs::create_dir_all(&m).unwrap();
        nix::mount::mount(
            Some(&dev.path),
            &m,
            Some("squashfs"),
            nix::mount::MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .unwrap();
        drop(dev);
        assert_eq!(read(&m.join("f")), "payload");
        nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH).unwrap();
        // AUTOCLEAR: the device goes with its last mount.
        assert_eq!(wait_loops(&env.dir, 0).len(), 0, "legacy={legacy}");
    }
    env.assert_clean();
}

/// The `lrun layer` commands end to end through the binary.
#[test]
fn layer_cli_pack_inspect_add_ls_rm_gc() {
    let env = Env::new();
    let lrun = env!("CARGO_BIN_EXE_lrun");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(lrun)
            .arg("--store")
            .arg(&env.ctx.store)
            .arg("--root")
            .arg(&env.ctx.state_root)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let tree = env.dir.join("t");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/x"), "x").unwrap();
    let out = env.dir.join("x.lrl");
    let (rc, o, e) = run(&[
        "layer",
        "pack",
        tree.to_str().unwrap(),
        "--name",
        "x",
        "--version",
        "953bc",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(rc, 0, "{e}");
    assert!(o.starts_with("x@953bc sha256:"), "{o}");
    let (rc, o, _) = run(&["layer", "inspect", "--json", out.to_str().unwrap()]);
    assert_eq!(rc, 0);
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(v["fs"], "erofs");
    assert_eq!(v["payloadOffset"], 4096);
    let (rc, o, _) = run(&["layer", "verify", out.to_str().unwrap()]);
    assert!(rc == 0 && o.ends_with(": ok\n"), "{o}");
    let (rc, o, _) = run(&["layer", "add", out.to_str().unwrap()]);
    assert!(rc == 0 && o.contains("added"), "{o}");
    let (rc, o, _) = run(&["layer", "add", out.to_str().unwrap()]);
    assert!(rc == 0 && o.contains("already present"), "{o}");
    let (_, o, _) = run(&["layer", "ls", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(v[0]["name"], "x");
    assert_eq!(v[0]["inUse"], false);
    // A bad file: exit status 1 and one line on stderr naming the file and the fault.
    let bad = env.dir.join("bad.lrl");
    fs::write(&bad, &fs::read(&out).unwrap()[..5000]).unwrap();
    let (rc, _, e) = run(&["layer", "add", bad.to_str().unwrap()]);
    assert_eq!(rc, 1);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("bad.lrl") && e.contains("past the end"), "{e}");
    let (rc, o, _) = run(&["layer", "gc", "--dry-run"]);
    assert!(rc == 0 && o.contains("would remove x@953bc"), "{o}");
    assert_eq!(env.store().list().unwrap().len(), 1);
    let (rc, o, _) = run(&["layer", "rm", "x@953bc"]);
    assert!(rc == 0 && o.starts_with("removed sha256:"), "{o}");
    assert!(env.store().list().unwrap().is_empty());
    assert!(!env.ctx.store.join("names/x@953bc").exists());
    env.assert_clean();
}

/// Same names, contents and modes give the same bytes, whatever the creation order, times
/// and owners of the source tree.
#[test]
fn pack_is_reproducible() {
    let env = Env::new();
    let files = ["a", "dir/b", "dir/sub/c", "z"];
    let make = |name: &str, order: &[&str], uid: u32| {
        let t = env.dir.join(name);
        for f in order {
            let p = t.join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, format!("content of {f}")).unwrap();
            std::os::unix::fs::chown(&p, Some(uid), Some(uid)).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        t
    };
    let rev: Vec<&str> = files.iter().rev().copied().collect();
    let t1 = make("r1", &files, 0);
    let t2 = make("r2", &rev, 1234);
    for fs_type in [FsType::Erofs, FsType::Squashfs] {
        let build = |tree: &Path, out: &str| {
            let out = env.dir.join(out);
            pack::pack(&pack::PackOptions {
                dir: tree,
                name: "r",
                version: "1",
                deps: vec![],
                fs: fs_type,
                compression: None,
                keep_owners: false,
                out: &out,
            })
            .unwrap();
            fs::read(out).unwrap()
        };
        let a = build(&t1, "r1.lrl");
        let b = build(&t2, "r2.lrl");
        assert!(a == b, "{fs_type:?}: images differ");
    }
    env.assert_clean();
}

/// Cost of prepare_root/release_root for a 3-layer stack, when the layers must be mounted
/// (first container on the node) and when another container already holds them. Run with
/// `cargo test --release --test layers bench_prepare -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_prepare_release() {
    let env = Env::new();
    three_layers(&env, FsType::Erofs);
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e3
    };
    for holder in [false, true] {
        if holder {
            env.prepare("holder", "top@1").unwrap().unwrap();
        }
        let (mut p, mut r) = (Vec::new(), Vec::new());
        for i in 0..100 {
            let id = format!("b{i}");
            let t = Instant::now();
            env.prepare(&id, "top@1").unwrap().unwrap();
            p.push(t.elapsed());
            let t = Instant::now();
            env.release(&id);
            r.push(t.elapsed());
        }
        eprintln!(
            "layers already mounted: {holder}: prepare_root {:.3} ms, release_root {:.3} ms (median of 100)",
            median(p),
            median(r)
        );
    }
    env.release("holder");
    env.assert_clean();
}

/// Same filesystem or another: always a copy the store owns (a reflink where the filesystem
/// has them), never a link to the caller's file, complete before it appears under its digest.
#[test]
fn add_copies_on_the_same_filesystem_and_across() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    let img = env.pack("x", "1", &[("f", "x")], &[], FsType::Erofs);
    let (d, _, new) = env.store().add(&img).unwrap();
    assert!(new);
    assert_eq!(fs::metadata(&img).unwrap().nlink(), 1, "not hard-linked");
    let stored = fs::symlink_metadata(env.store().image_path(&d)).unwrap();
    assert!(stored.is_file());
    assert_eq!(
        (stored.nlink(), stored.uid(), stored.mode() & 0o7777),
        (1, 0, 0o444)
    );
    // A store on a tmpfs (the state root here) is another filesystem.
    let other = Store::new(&env.ctx.state_root.join("store2"));
    let (d2, _, _) = other.add(&img).unwrap();
    assert_eq!(d, d2);
    let copy = other.image_path(&d);
    assert_eq!(fs::metadata(&copy).unwrap().nlink(), 1);
    assert_eq!(fs::read(&copy).unwrap(), fs::read(&img).unwrap());
    assert_eq!(
        fs::read_dir(env.ctx.state_root.join("store2/tmp"))
            .unwrap()
            .count(),
        0
    );
    fs::remove_dir_all(env.ctx.state_root.join("store2")).unwrap();
    env.assert_clean();
}

/// Adding a reference to a layer that is already mounted takes the layer's lock shared: it
/// goes through while another process holds the lock shared, and waits while one holds it
/// exclusively (as a mounting or releasing process does).
#[test]
fn reference_to_a_mounted_layer_takes_the_lock_shared() {
    use std::os::fd::AsRawFd;
    let env = Env::new();
    three_layers(&env, FsType::Erofs);
    env.prepare("holder", "top@1").unwrap().unwrap();
    let lock_all = |op: libc::c_int| -> Vec<fs::File> {
        let rd = fs::read_dir(env.ctx.state_root.join("@layers")).unwrap();
        let files: Vec<fs::File> = rd
            .flatten()
            .map(|e| fs::File::open(e.path().join("lock")).unwrap())
            .collect();
        for f in &files {
            // SAFETY: flock on an fd we own.
            assert_eq!(unsafe { libc::flock(f.as_raw_fd(), op) }, 0);
        }
        files
    };
    let shared = lock_all(libc::LOCK_SH);
    assert_eq!(shared.len(), 3);
    std::thread::scope(|s| {
        let h = s.spawn(|| env.prepare("b", "top@1").unwrap().unwrap());
        let t = Instant::now();
        while !h.is_finished() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let done = h.is_finished();
        // Unblock it either way, so a failure does not hang the test.
        drop(shared);
        h.join().unwrap();
        assert!(done, "adding a reference waited for a shared lock");
    });
    let exclusive = lock_all(libc::LOCK_EX);
    std::thread::scope(|s| {
        let h = s.spawn(|| env.prepare("c", "top@1").unwrap().unwrap());
        std::thread::sleep(Duration::from_millis(300));
        assert!(!h.is_finished(), "prepare went through an exclusive lock");
        drop(exclusive);
        let m = h.join().unwrap();
        assert!(m.is_dir());
    });
    for id in ["c", "b", "holder"] {
        env.release(id);
    }
    env.assert_clean();
}
