//! `decode_qweights` on arbitrary bytes for a two-layer layout. A decoded
//! file must have the layout's element counts.
#![no_main]

use darknet::formats::qfiles::decode_qweights;
use darknet::network::layers::ParamLayout;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let layouts = [ParamLayout::Connected { inputs: 3, outputs: 2 }, ParamLayout::Connected { inputs: 2, outputs: 4 }];
    if let Ok(layers) = decode_qweights(data, &layouts, Path::new("fuzz.qweights"), Path::new("fuzz.cfg")) {
        for (layer, layout) in layers.iter().zip(&layouts) {
            assert_eq!(layer.biases.len(), layout.outputs());
            assert_eq!(layer.weights.len(), layout.outputs() * layout.fan_in());
        }
    }
});
