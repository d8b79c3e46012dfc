//! `NetworkConfig::parse` on arbitrary text: libFuzzer reports any panic.
//! A parsed cfg is also built into a network when it is small, which
//! covers the shape checks of `Network::build`.
#![no_main]

use darknet::config::cfg::NetworkConfig;
use darknet::network::Network;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

/// Largest parameter count built per input, so the fuzzer tests logic rather
/// than the allocator.
const MAX_BUILD_VALUES: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(cfg) = NetworkConfig::parse(text, Path::new("fuzz.cfg")) else { return };
    let mut width = cfg.net.inputs;
    let mut values = 0usize;
    for layer in &cfg.layers {
        if let darknet::config::cfg::LayerSpec::Connected { output, .. } = layer.spec {
            values = values.saturating_add(width.saturating_mul(output)).saturating_add(output.saturating_mul(cfg.net.batch));
            width = output;
        }
    }
    if values <= MAX_BUILD_VALUES && cfg.net.inputs.saturating_mul(cfg.net.batch) <= MAX_BUILD_VALUES {
        let _ = Network::build(&cfg, cfg.net.mini_batch(), 1);
    }
});
