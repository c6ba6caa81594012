//! A bundle's layer section: the `org.lrun.layers` annotation (its top layers) and where the
//! container's writes go (`org.lrun.layers.upper`, `root.readonly`).

use anyhow::{Context, Result, bail};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use super::store::LayerRef;

/// Annotation naming the top layers (top-most first).
pub const ANNOTATION_LAYERS: &str = "org.lrun.layers";
/// Annotation choosing where the writable upper lives.
pub const ANNOTATION_UPPER: &str = "org.lrun.layers.upper";

/// The annotations by which containerd's CRI and CRI-O mark a pod's sandbox ("pause")
/// container, with the value they give it there.
const POD_SANDBOX_MARKERS: [(&str, &str); 2] = [
    ("io.kubernetes.cri.container-type", "sandbox"),
    ("io.kubernetes.cri-o.ContainerType", "sandbox"),
];

/// Where a container's writes go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpperMode {
    /// A directory in the container's state dir (on the state root's filesystem).
    State,
    /// A tmpfs of its own, mounted with the given options (e.g. "size=64m").
    Tmpfs(String),
    /// No upper: root.readonly is true.
    None,
}

/// The layer part of a bundle, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSpec {
    pub tops: Vec<LayerRef>,
    pub upper: UpperMode,
}

/// Read the bundle's layer annotations. `None` for a plain bundle, and for a Kubernetes pod's
/// sandbox container: the engines copy a pod's annotations into it as into every container of
/// the pod, but its root is the pause image (runtime-spec/kubernetes.md).
pub fn layer_spec(spec: &Spec) -> Result<Option<LayerSpec>> {
    let Some(ann) = spec.annotations().as_ref() else {
        return Ok(None);
    };
    let Some(value) = ann.get(ANNOTATION_LAYERS) else {
        return Ok(None);
    };
    if POD_SANDBOX_MARKERS
        .iter()
        .any(|(k, v)| ann.get(*k).map(String::as_str) == Some(*v))
    {
        return Ok(None);
    }
    let items: Vec<String> = if value.trim_start().starts_with('[') {
        serde_json::from_str(value)
            .with_context(|| format!("annotation {ANNOTATION_LAYERS}: not a JSON string array"))?
    } else {
        value.split(',').map(|s| s.trim().to_string()).collect()
    };
    let mut tops = Vec::new();
    for it in items.iter().filter(|s| !s.is_empty()) {
        tops.push(LayerRef::parse(it).with_context(|| format!("annotation {ANNOTATION_LAYERS}"))?);
    }
    if tops.is_empty() {
        bail!("annotation {ANNOTATION_LAYERS}: names no layer");
    }
    let readonly = spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    let upper = if readonly {
        UpperMode::None
    } else {
        match ann.get(ANNOTATION_UPPER).map(|s| s.trim()) {
            None | Some("") | Some("state") => UpperMode::State,
            Some(v) => {
                let (mode, opts) = v.split_once(',').unwrap_or((v, ""));
                if mode != "tmpfs" {
                    bail!(
                        "annotation {ANNOTATION_UPPER}: {v:?}: use \"state\" or \"tmpfs[,OPTIONS]\""
                    );
                }
                if opts.contains(['\0', '\n']) {
                    bail!("annotation {ANNOTATION_UPPER}: bad tmpfs options {opts:?}");
                }
                UpperMode::Tmpfs(opts.to_string())
            }
        }
    };
    Ok(Some(LayerSpec { tops, upper }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A config.json with these annotations (shared by the layers module's unit tests).
    pub(crate) fn spec(ann: &[(&str, &str)], readonly: bool) -> Spec {
        let ann: serde_json::Map<String, serde_json::Value> = ann
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        let v = serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs", "readonly": readonly},
            "annotations": ann,
        });
        crate::bundle::parse_config(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn plain_bundle_has_no_layer_spec() {
        assert_eq!(layer_spec(&spec(&[], false)).unwrap(), None);
        assert_eq!(layer_spec(&spec(&[("other", "x")], false)).unwrap(), None);
    }

    #[test]
    fn pod_sandbox_container_is_never_layered() {
        for marker in POD_SANDBOX_MARKERS {
            let s = spec(&[(ANNOTATION_LAYERS, "app@1"), marker], false);
            assert_eq!(layer_spec(&s).unwrap(), None, "{marker:?}");
        }
        let app = spec(
            &[
                (ANNOTATION_LAYERS, "app@1"),
                ("io.kubernetes.cri.container-type", "container"),
            ],
            false,
        );
        assert!(layer_spec(&app).unwrap().is_some());
    }

    #[test]
    fn comma_list_and_json_array_give_the_same_tops() {
        let a = layer_spec(&spec(&[(ANNOTATION_LAYERS, "app@1, lib/x.lrl")], false)).unwrap();
        let b = layer_spec(&spec(
            &[(ANNOTATION_LAYERS, r#"["app@1","lib/x.lrl"]"#)],
            false,
        ))
        .unwrap();
        assert_eq!(a, b);
        let a = a.unwrap();
        assert_eq!(a.upper, UpperMode::State);
        assert_eq!(a.tops[1], LayerRef::Path("lib/x.lrl".into()));
    }

    #[test]
    fn upper_mode_follows_annotation_and_readonly() {
        let tmpfs = layer_spec(&spec(
            &[
                (ANNOTATION_LAYERS, "a@1"),
                (ANNOTATION_UPPER, "tmpfs,size=1m"),
            ],
            false,
        ))
        .unwrap()
        .unwrap();
        assert_eq!(tmpfs.upper, UpperMode::Tmpfs("size=1m".into()));
        let ro = layer_spec(&spec(
            &[(ANNOTATION_LAYERS, "a@1"), (ANNOTATION_UPPER, "tmpfs")],
            true,
        ))
        .unwrap()
        .unwrap();
        assert_eq!(ro.upper, UpperMode::None);
        let bad = layer_spec(&spec(
            &[(ANNOTATION_LAYERS, "a@1"), (ANNOTATION_UPPER, "disk")],
            false,
        ));
        assert!(format!("{:#}", bad.unwrap_err()).contains(ANNOTATION_UPPER));
    }

    #[test]
    fn bad_references_name_the_annotation() {
        for v in ["", " , ", "noversion", "[1,2]"] {
            let e = layer_spec(&spec(&[(ANNOTATION_LAYERS, v)], false)).unwrap_err();
            assert!(format!("{e:#}").contains(ANNOTATION_LAYERS), "{v:?}: {e:#}");
        }
    }
}
