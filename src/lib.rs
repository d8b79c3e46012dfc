//! Darknet's image classifier in Rust: `.data`/`.cfg` parsing, FP32 training,
//! quantization-aware training (QAT) and integer-only INT8 inference.
//!
//! Data flows one way: files ([`config`], [`formats`], [`data`]) -> a
//! [`network::Network`] or a [`quant::int8_network::Int8Network`] -> the
//! command loops in [`commands`] -> files again.

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
