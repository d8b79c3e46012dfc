//! `decode_weights` on arbitrary bytes for two small networks, one with
//! batch normalization. The first byte picks the network, and the rest is
//! the file. A decoded network must be finite and keep its shape.
#![no_main]

use darknet::config::cfg::NetworkConfig;
use darknet::formats::weights::{decode_weights, network_is_finite};
use darknet::network::Network;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

const PLAIN: &str = "[net]\nbatch=2\nwidth=2\nheight=1\nchannels=1\n[connected]\noutput=3\nactivation=relu\n[connected]\noutput=2\nactivation=linear\n[softmax]\n";
const BATCH_NORM: &str = "[net]\nbatch=2\nwidth=1\nheight=1\nchannels=3\n[connected]\noutput=2\nbatch_normalize=1\nactivation=leaky\n[softmax]\n";

fuzz_target!(|data: &[u8]| {
    let Some((&choice, file)) = data.split_first() else { return };
    let text = if choice & 1 == 0 { PLAIN } else { BATCH_NORM };
    let cfg = NetworkConfig::parse(text, Path::new("fuzz.cfg")).expect("the built-in cfg parses");
    let mut net = Network::build(&cfg, 2, 1).expect("the built-in cfg builds");
    let outputs = net.outputs();
    if decode_weights(&mut net, file, Path::new("fuzz.weights"), Path::new("fuzz.cfg")).is_ok() {
        assert!(network_is_finite(&net));
        assert_eq!(net.outputs(), outputs);
    }
});
