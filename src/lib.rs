//! Darknet's image classifier in Rust: `.data`/`.cfg` parsing, FP32 training,
//! quantization-aware training (QAT) and integer-only INT8 inference.
//!
//! Data flows one way: files ([`config`], [`formats`], [`data`]) -> a
//! [`network::Network`] or a [`quant::int8_network::Int8Network`] -> the
//! command loops in [`commands`] -> files again.

/// Prints a line on stderr as `eprintln!` does, but ignores a closed stderr
/// (`2>&1 | head`) instead of panicking, so a run still finishes its work
/// and writes its files.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod cli;
pub mod commands;
pub mod config;
pub mod data;
pub mod formats;
pub mod kernels;
pub mod log;
pub mod network;
pub mod quant;
pub mod report;
