//! `decode_qparams` on arbitrary bytes. The first byte is the layer count
//! (0 to 7), and the rest is the file. Decoded scales must be positive and finite.
#![no_main]

use darknet::formats::qfiles::decode_qparams;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Some((&count, file)) = data.split_first() else { return };
    let layers = (count % 8) as usize;
    if let Ok(params) = decode_qparams(file, layers, Path::new("fuzz.qparams"), Path::new("fuzz.cfg")) {
        assert_eq!(params.len(), layers);
        for p in params {
            for scale in [p.input.scale, p.weight.scale, p.output.scale] {
                assert!(scale.is_finite());
                assert!(scale > 0.0);
            }
        }
    }
});
