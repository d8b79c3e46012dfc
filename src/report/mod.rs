//! Output meant for people: progress bars on a terminal, PNG charts and the
//! per-layer quantization report. The machine-readable log is [`crate::log`].

pub mod charts;
pub mod progress;
pub mod quant_report;
