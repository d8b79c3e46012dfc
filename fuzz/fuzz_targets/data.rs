//! `DataConfig::parse` on arbitrary text: libFuzzer reports any panic.
#![no_main]

use darknet::config::data_file::DataConfig;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = DataConfig::parse(text, Path::new("fuzz.data")) {
        let _ = config.require(&config.train, "train");
        let _ = config.require(&config.valid, "valid");
    }
});
