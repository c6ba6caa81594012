//! Dependency closure from layer headers (src/layers/closure.rs): the dependency lists come
//! from image headers, so their graph is hostile (cycles, diamonds, long chains, missing
//! layers, a digest whose header names another layer).
//!
//! Input: a count of top layers, then per layer a dependency count and that many bytes, each
//! naming a layer (low 6 bits, 64 layers at most; bit 6 set gives the dependency a wrong
//! version; layers 48-63 are missing from the node). Layers' headers and digests are made up.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lrun::layers::closure;
use lrun::layers::header::{Dep, Digest, FsType, Header};

const LAYERS: usize = 64;
const PRESENT: u8 = 48;

fn digest(i: u8) -> Digest {
    Digest([i; 32])
}

fuzz_target!(|input: &[u8]| {
    let mut bytes = input.iter().copied();
    let ntops = usize::from(bytes.next().unwrap_or(0) % 8);
    let tops: Vec<Digest> = bytes
        .by_ref()
        .take(ntops)
        .map(|b| digest(b % LAYERS as u8))
        .collect();
    let mut deps: Vec<Vec<u8>> = vec![Vec::new(); LAYERS];
    for list in deps.iter_mut() {
        let n = usize::from(bytes.next().unwrap_or(0));
        list.extend(bytes.by_ref().take(n));
    }
    let header = |i: u8| Header {
        name: format!("l{i}"),
        version: "1".into(),
        fs: FsType::Erofs,
        payload_offset: 4096,
        payload_len: 4096,
        payload_digest: digest(0),
        deps: deps[usize::from(i)]
            .iter()
            .map(|&b| Dep {
                name: format!("l{}", b % LAYERS as u8),
                version: if b & 64 != 0 { "2".into() } else { "1".into() },
                digest: digest(b % LAYERS as u8),
            })
            .collect(),
    };
    let mut lookups = 0usize;
    let result = closure::resolve(&tops, &mut |d| {
        lookups += 1;
        let i = d.0[0];
        Ok((i < PRESENT).then(|| header(i)))
    });
    // Each layer is looked up once: no exponential walk of a diamond-shaped graph.
    assert!(lookups <= LAYERS, "{lookups} lookups for {LAYERS} layers");
    if let Ok(order) = result {
        // Every layer comes before (above) everything it depends on.
        let pos = |d: &Digest| order.iter().position(|(x, _)| x == d);
        for (i, (d, h)) in order.iter().enumerate() {
            assert_eq!(pos(d), Some(i), "a layer appears twice");
            for dep in &h.deps {
                assert!(
                    pos(&dep.digest).is_some_and(|p| p > i),
                    "dependency above its user"
                );
            }
        }
    }
});
