//! A bundle's config.json (src/bundle.rs): parsing and validation, then what create reads from
//! the parsed spec before anything exists: the layer annotations and the seccomp profile
//! (checked and compiled to BPF; never loaded).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(spec) = lrun::bundle::parse_config(input) else {
        return;
    };
    let _ = lrun::layers::layer_spec(&spec);
    if let Some(seccomp) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        let _ = lrun::seccomp::validate(seccomp);
        if let Ok(filter) = lrun::seccomp::prepare(seccomp) {
            let _ = filter.len();
        }
    }
});
