//! `Int8Network::from_parts` and one prediction on arbitrary `.qparams` and
//! `.qweights` contents for a two-layer MLP. The first 30 bytes are the
//! `.qparams` file, the rest the `.qweights`. A network that loads must give
//! each image finite probabilities that sum to 1.
#![no_main]

use darknet::config::cfg::NetworkConfig;
use darknet::formats::qfiles::{decode_qparams, decode_qweights};
use darknet::network::layers::ParamLayout;
use darknet::quant::int8_network::Int8Network;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

const CFG: &str = "[net]\nbatch=2\nheight=1\nwidth=1\nchannels=3\n\
[connected]\noutput=2\nactivation=relu\n\
[connected]\noutput=4\nactivation=linear\n\
[softmax]\n";

fuzz_target!(|data: &[u8]| {
    if data.len() < 30 {
        return;
    }
    let (qparams_bytes, qweights_bytes) = data.split_at(30);
    let cfg = NetworkConfig::parse(CFG, Path::new("fuzz.cfg")).expect("the fixed cfg parses");
    let layouts = [ParamLayout::Connected { inputs: 3, outputs: 2 }, ParamLayout::Connected { inputs: 2, outputs: 4 }];
    let (qparams_path, qweights_path) = (Path::new("fuzz.qparams"), Path::new("fuzz.qweights"));
    let Ok(qparams) = decode_qparams(qparams_bytes, 2, qparams_path, &cfg.path) else { return };
    let Ok(qweights) = decode_qweights(qweights_bytes, &layouts, qweights_path, &cfg.path) else { return };
    let Ok(mut net) = Int8Network::from_parts(&cfg, qparams, qweights, qparams_path, 2) else { return };
    let probabilities = net.predict(&[0.0, 0.5, 1.0, 1.0, 0.25, 0.0], 2);
    for row in probabilities.chunks_exact(4) {
        assert!(row.iter().all(|p| p.is_finite() && *p >= 0.0));
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    }
});
