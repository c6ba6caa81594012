//! Dependency closure: from the top layers a bundle names to the full, ordered stack.

use std::collections::HashMap;

use anyhow::{Result, bail};

use super::header::{Digest, Header, MAX_LAYERS};

/// A layer of the closure that `lookup` did not find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub digest: Digest,
    /// For a dependency: its recorded name@version and the label of the layer needing it.
    /// `None` for a top.
    pub needed: Option<Needed>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needed {
    pub name: String,
    pub version: String,
    pub by: String,
}

/// The error `walk` and `resolve` return when layers are missing (all of them, at once):
/// callers branch on it (add a pull hint, or name the source that lacks them).
#[derive(Debug)]
pub struct MissingLayers(pub Vec<Missing>);

impl std::fmt::Display for MissingLayers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let items: Vec<String> = self
            .0
            .iter()
            .map(|m| match &m.needed {
                None => format!("{} (named by the bundle)", m.digest),
                Some(n) => format!("{}@{} ({}) needed by {}", n.name, n.version, m.digest, n.by),
            })
            .collect();
        write!(
            f,
            "{} missing layer{}: {}",
            items.len(),
            if items.len() == 1 { "" } else { "s" },
            items.join("; ")
        )
    }
}

impl std::error::Error for MissingLayers {}

/// `walk`, refusing a closure deeper than overlayfs stacks.
pub fn resolve(
    tops: &[Digest],
    lookup: &mut dyn FnMut(&Digest) -> Result<Option<Header>>,
) -> Result<Vec<(Digest, Header)>> {
    let post = walk(tops, lookup)?;
    if post.len() > MAX_LAYERS {
        bail!(
            "the layer closure has {} layers; overlayfs stacks at most {MAX_LAYERS}",
            post.len()
        );
    }
    Ok(post)
}

/// Order the closure of `tops` top-most first, so that every layer comes before (above)
/// everything it depends on. The order is a function of the inputs only: depth-first in the
/// order the bundle lists its tops and each header lists its dependencies, post-order
/// reversed. `lookup` returns the header of a layer present on the node.
///
/// Every missing layer is reported at once (`MissingLayers`), with who needs it, so a user
/// can fetch them all in one go; a cycle is reported with its path.
pub fn walk(
    tops: &[Digest],
    lookup: &mut dyn FnMut(&Digest) -> Result<Option<Header>>,
) -> Result<Vec<(Digest, Header)>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    let mut marks: HashMap<Digest, Mark> = HashMap::new();
    let mut headers: HashMap<Digest, Header> = HashMap::new();
    let mut post: Vec<(Digest, Header)> = Vec::new();
    let mut missing: Vec<Missing> = Vec::new();

    // Explicit stack of (digest, next dependency index) so deep chains cannot overflow.
    for top in tops {
        if marks.contains_key(top) {
            continue;
        }
        let Some(h) = lookup(top)? else {
            missing.push(Missing {
                digest: *top,
                needed: None,
            });
            marks.insert(*top, Mark::Done);
            continue;
        };
        headers.insert(*top, h);
        marks.insert(*top, Mark::Visiting);
        let mut stack: Vec<(Digest, usize)> = vec![(*top, 0)];
        while let Some(&mut (cur, ref mut idx)) = stack.last_mut() {
            let deps = &headers[&cur].deps;
            if *idx == deps.len() {
                marks.insert(cur, Mark::Done);
                post.push((cur, headers[&cur].clone()));
                stack.pop();
                continue;
            }
            let dep = deps[*idx].clone();
            *idx += 1;
            match marks.get(&dep.digest) {
                Some(Mark::Done) => continue,
                Some(Mark::Visiting) => {
                    let start = stack
                        .iter()
                        .position(|(d, _)| *d == dep.digest)
                        .unwrap_or(0);
                    let path: Vec<String> = stack[start..]
                        .iter()
                        .map(|(d, _)| headers[d].label())
                        .chain(std::iter::once(format!("{}@{}", dep.name, dep.version)))
                        .collect();
                    bail!("dependency cycle: {}", path.join(" -> "));
                }
                None => {}
            }
            match lookup(&dep.digest)? {
                Some(h) => {
                    if h.name != dep.name || h.version != dep.version {
                        bail!(
                            "{} depends on {}@{} ({}), but that digest is {}",
                            headers[&cur].label(),
                            dep.name,
                            dep.version,
                            dep.digest,
                            h.label()
                        );
                    }
                    headers.insert(dep.digest, h);
                    marks.insert(dep.digest, Mark::Visiting);
                    stack.push((dep.digest, 0));
                }
                None => {
                    missing.push(Missing {
                        digest: dep.digest,
                        needed: Some(Needed {
                            name: dep.name.clone(),
                            version: dep.version.clone(),
                            by: headers[&cur].label(),
                        }),
                    });
                    marks.insert(dep.digest, Mark::Done);
                }
            }
        }
    }
    if !missing.is_empty() {
        return Err(MissingLayers(missing).into());
    }
    post.reverse();
    Ok(post)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::header::{Dep, FsType};

    struct Graph(HashMap<Digest, Header>);

    fn id(name: &str) -> Digest {
        Digest::of(name.as_bytes())
    }

    impl Graph {
        fn new(edges: &[(&str, &[&str])]) -> Graph {
            let mut m = HashMap::new();
            for (name, deps) in edges {
                m.insert(
                    id(name),
                    Header {
                        name: name.to_string(),
                        version: "1".into(),
                        fs: FsType::Erofs,
                        payload_offset: 4096,
                        payload_len: 4096,
                        payload_digest: id("p"),
                        deps: deps
                            .iter()
                            .map(|d| Dep {
                                name: d.to_string(),
                                version: "1".into(),
                                digest: id(d),
                            })
                            .collect(),
                    },
                );
            }
            Graph(m)
        }

        fn resolve(&self, tops: &[&str]) -> Result<Vec<String>> {
            let tops: Vec<Digest> = tops.iter().map(|t| id(t)).collect();
            let r = resolve(&tops, &mut |d| Ok(self.0.get(d).cloned()))?;
            Ok(r.into_iter().map(|(_, h)| h.name).collect())
        }
    }

    fn pos(v: &[String], n: &str) -> usize {
        v.iter().position(|x| x == n).unwrap()
    }

    #[test]
    fn each_layer_is_above_its_dependencies() {
        let g = Graph::new(&[
            ("app", &["liba", "libb"]),
            ("liba", &["base"]),
            ("libb", &["base", "libc"]),
            ("libc", &["base"]),
            ("base", &[]),
        ]);
        let order = g.resolve(&["app"]).unwrap();
        assert_eq!(order, ["app", "libb", "libc", "liba", "base"]);
        for (n, h) in &g.0 {
            for d in &h.deps {
                assert!(pos(&order, &h.name) < pos(&order, &d.name), "{n:?}");
            }
        }
    }

    #[test]
    fn order_is_deterministic_and_shared_deps_appear_once() {
        let g = Graph::new(&[("a", &["base"]), ("b", &["base"]), ("base", &[])]);
        let o1 = g.resolve(&["a", "b"]).unwrap();
        assert_eq!(o1, ["b", "a", "base"]);
        assert_eq!(o1, g.resolve(&["a", "b", "a"]).unwrap());
    }

    #[test]
    fn cycle_is_reported_with_its_path() {
        let g = Graph::new(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])]);
        let err = format!("{:#}", g.resolve(&["a"]).unwrap_err());
        assert!(err.contains("cycle: a@1 -> b@1 -> c@1 -> a@1"), "{err}");
        let g = Graph::new(&[("self", &["self"])]);
        assert!(format!("{:#}", g.resolve(&["self"]).unwrap_err()).contains("cycle"));
    }

    #[test]
    fn all_missing_layers_are_listed() {
        let g = Graph::new(&[("app", &["x", "lib"]), ("lib", &["y"])]);
        let err = format!("{:#}", g.resolve(&["app", "nope"]).unwrap_err());
        assert!(err.starts_with("3 missing layers"), "{err}");
        assert!(
            err.contains("x@1") && err.contains("needed by app@1"),
            "{err}"
        );
        assert!(
            err.contains("y@1") && err.contains("needed by lib@1"),
            "{err}"
        );
        assert!(err.contains("named by the bundle"), "{err}");
    }

    #[test]
    fn deep_chain_does_not_overflow_and_limit_is_enforced() {
        let names: Vec<String> = (0..=MAX_LAYERS).map(|i| format!("l{i}")).collect();
        let deps: Vec<Vec<&str>> = (0..=MAX_LAYERS)
            .map(|i| {
                if i == 0 {
                    vec![]
                } else {
                    vec![names[i - 1].as_str()]
                }
            })
            .collect();
        let edges: Vec<(&str, &[&str])> = names
            .iter()
            .zip(&deps)
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        let g = Graph::new(&edges);
        let ok = g.resolve(&[&names[MAX_LAYERS - 1]]).unwrap();
        assert_eq!(ok.len(), MAX_LAYERS);
        assert_eq!(ok[0], names[MAX_LAYERS - 1]);
        let err = format!("{:#}", g.resolve(&[&names[MAX_LAYERS]]).unwrap_err());
        assert!(err.contains("at most 500"), "{err}");
    }
}
