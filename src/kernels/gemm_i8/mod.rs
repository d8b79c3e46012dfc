//! The int8 GEMM with its requantization epilogue:
//!
//! `out[r][o] = clamp(Z3 + M * acc[r][o], -128, 127)` where
//! `acc[r][o] = offset[o] - Z2 * Σ_k a[r][k] + Σ_k a[r][k] * w[o][k]`
//! and `offset[o] = bias[o] + K*Z1*Z2 - Z1 * Σ_k w[o][k]` is built once at load time.
//!
//! All sums are int32 with wrapping arithmetic. The caller guarantees at load
//! time that the exact accumulator fits in int32 (see
//! [`Requantization::new`]), so wrapping never changes a result. The same
//! argument lets every kernel add the terms in its own order.
//!
//! # Kernels
//!
//! Three kernels compute the same bits, and the tests compare the SIMD ones to
//! the scalar one:
//! - [`Kernel::Scalar`] ([`scalar`]): portable loops, the reference.
//! - [`Kernel::Avx2`]: sign-extends weights and activations to i16 and
//!   multiplies pairs with `vpmaddwd`. A pair sum is at most `2 * 128 * 128`,
//!   so it cannot saturate, unlike `vpmaddubsw`, whose i16 pair sum of
//!   `(a + 128) * w` reaches 65,280.
//! - [`Kernel::Avx512Vnni`]: `vpdpbusd` multiplies unsigned by signed bytes, so
//!   activations are shifted to `a + 128` (a flip of the sign bit). Because
//!   `Σ (a + 128) * w = Σ a * w + 128 * Σ w`, the load time subtracts
//!   `128 * Σ_k w[o][k]` from each offset ([`Requantization::unsigned_offsets`]).
//!
//! [`gemm_requantize`] runs [`Kernel::selected`]: the best kernel the CPU
//! supports, or the one named by the `DARKNET_GEMM_I8` environment variable
//! (`scalar`, `avx2` or `vnni`). It runs on one thread unless
//! `DARKNET_GEMM_I8_THREADS` allows more (see [`default_threads`]).
//! [`gemm_requantize_with`] takes the kernel and thread count explicitly, for
//! tests and benchmarks.
//!
//! # Packed weight layout
//!
//! Both SIMD kernels read the weights from [`PackedWeights::panels`], built once
//! in [`PackedWeights::new`]: panels of 16 outputs (one 512-bit vector of int32
//! accumulators), each a run of 64-byte blocks, one block per group of 4
//! consecutive `k`. Block `q` of panel `p` stores `w[16p + j][4q + t]` at byte
//! `4j + t`. Outputs past `outputs` and `k` past `K` are zero, so padded lanes
//! add nothing to the sums.
//!
//! # The vectorized rescale
//!
//! The SIMD epilogues run [`crate::quant::fixed_point::multiply_by_multiplier`]
//! lane by lane, split into the steps of [`RescaleSteps`]. One identity makes
//! the high multiply cheap: for the product `p = x * M0`, gemmlowp's
//! `(p + nudge) / 2^31` with truncating division and `nudge = 2^30` for
//! `p >= 0`, `1 - 2^30` otherwise, equals `floor((p + 2^30) / 2^31)`. For
//! `p >= 0` the two are the same expression. For `p < 0` the numerator
//! `p + 1 - 2^30` is negative, so truncation adds `2^31 - 1` before flooring,
//! which gives `p + 2^30` again. The SIMD code therefore needs only a 64-bit
//! add and a shift.

#[cfg(target_arch = "x86_64")]
mod avx2;
mod rescale;
pub mod scalar;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod vnni;

pub use rescale::RescaleSteps;

use crate::quant::fixed_point::FixedMultiplier;
use std::str::FromStr;
use std::sync::OnceLock;

/// Outputs per weight panel, the int32 lanes of one 512-bit vector.
pub const PANEL_WIDTH: usize = 16;
/// Consecutive `k` per block, the bytes one `vpdpbusd` lane sums.
pub const K_GROUP: usize = 4;

/// Environment variable that forces a kernel: `scalar`, `avx2` or `vnni`.
pub const KERNEL_ENV: &str = "DARKNET_GEMM_I8";
/// Environment variable that lets [`gemm_requantize`] use threads: a
/// positive thread count, or `auto` for every available core. Unset, it runs
/// on one thread.
pub const THREADS_ENV: &str = "DARKNET_GEMM_I8_THREADS";

/// Below this many rows [`gemm_requantize`] stays on one thread.
pub const PARALLEL_MIN_ROWS: usize = 32;
/// Below this many multiply-adds (`rows * k * outputs`) [`gemm_requantize`]
/// stays on one thread. Starting and joining a scoped thread took about
/// 20 µs on a Zen 4 machine, while 2^24 multiply-adds took about 120 µs on
/// the AVX-512 VNNI kernel there.
pub const PARALLEL_MIN_WORK: usize = 1 << 24;

/// The 16 outputs x 4 `k` of one panel block (see the module doc for the order).
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub struct PanelBlock(pub [i8; PANEL_WIDTH * K_GROUP]);

/// Weights `[outputs][k]` in the row-major form of the scalar kernel and in
/// the panel form of the SIMD kernels.
#[derive(Debug, Clone)]
pub struct PackedWeights {
    pub outputs: usize,
    pub k: usize,
    /// Row-major `[outputs][k]`.
    pub rows: Vec<i8>,
    /// `Σ_k w[o][k]` per output.
    pub row_sums: Vec<i32>,
    /// `[panels][k_groups]` blocks, zero-padded (see the module doc).
    pub panels: Vec<PanelBlock>,
}

impl PackedWeights {
    /// Packs row-major `[outputs][k]` weights into both layouts.
    pub fn new(weights: &[i8], outputs: usize, k: usize) -> Self {
        assert_eq!(weights.len(), outputs * k, "weights are not outputs x k");
        let row_sums = (0..outputs).map(|o| weights[o * k..(o + 1) * k].iter().map(|&w| w as i32).sum()).collect();

        let k_groups = k.div_ceil(K_GROUP);
        let mut panels = vec![PanelBlock([0; PANEL_WIDTH * K_GROUP]); outputs.div_ceil(PANEL_WIDTH) * k_groups];
        for o in 0..outputs {
            let (panel, lane) = (o / PANEL_WIDTH, o % PANEL_WIDTH);
            for (i, &w) in weights[o * k..(o + 1) * k].iter().enumerate() {
                panels[panel * k_groups + i / K_GROUP].0[lane * K_GROUP + i % K_GROUP] = w;
            }
        }

        PackedWeights { outputs, k, rows: weights.to_vec(), row_sums, panels }
    }

    /// Groups of [`K_GROUP`] `k`, the blocks per panel.
    pub fn k_groups(&self) -> usize {
        self.k.div_ceil(K_GROUP)
    }

    /// Panels of [`PANEL_WIDTH`] outputs.
    pub fn panel_count(&self) -> usize {
        self.outputs.div_ceil(PANEL_WIDTH)
    }

    /// Outputs rounded up to whole panels.
    pub fn padded_outputs(&self) -> usize {
        self.panel_count() * PANEL_WIDTH
    }
}

/// The per-layer constants of the epilogue.
#[derive(Debug, Clone)]
pub struct Requantization {
    /// `bias + K*Z1*Z2 - Z1*Σw` per output.
    pub offsets: Vec<i32>,
    /// `offsets` padded with zeros to [`PackedWeights::padded_outputs`], for
    /// the AVX2 kernel's whole-vector loads.
    pub padded_offsets: Vec<i32>,
    /// `offsets[o] - 128 * Σ_k w[o][k]` (wrapping), zero-padded like
    /// `padded_offsets`: the offsets of the AVX-512 VNNI kernel, whose
    /// activations are `a + 128`.
    pub unsigned_offsets: Vec<i32>,
    pub weight_zero_point: i32,
    pub multiplier: FixedMultiplier,
    pub output_zero_point: i32,
}

impl Requantization {
    /// Folds the zero points and the bias into per-output offsets. Biases are
    /// clamped so that `|acc| <= K * 255 * 255 + |bias|` stays inside int32;
    /// returns how many were clamped.
    pub fn new(
        weights: &PackedWeights,
        biases: &[i32],
        input_zero_point: i32,
        weight_zero_point: i32,
        multiplier: FixedMultiplier,
        output_zero_point: i32,
    ) -> (Requantization, usize) {
        assert!(biases.len() >= weights.outputs, "fewer biases than outputs");
        let k = weights.k as i64;
        let bias_limit = (i32::MAX as i64 - k * 255 * 255).max(0);
        let mut clamped = 0;
        let offsets: Vec<i32> = weights
            .row_sums
            .iter()
            .zip(biases)
            .map(|(&sum, &bias)| {
                let b = (bias as i64).clamp(-bias_limit, bias_limit);
                clamped += (b != bias as i64) as usize;
                let z1 = input_zero_point as i64;
                let z2 = weight_zero_point as i64;
                // Wrapping is harmless: the final accumulator is exact in int32.
                (b + k * z1 * z2 - z1 * sum as i64) as i32
            })
            .collect();

        let mut padded_offsets = offsets.clone();
        padded_offsets.resize(weights.padded_outputs(), 0);
        let mut unsigned_offsets: Vec<i32> = offsets
            .iter()
            .zip(&weights.row_sums)
            .map(|(&offset, &sum)| offset.wrapping_sub(sum.wrapping_mul(128)))
            .collect();
        unsigned_offsets.resize(weights.padded_outputs(), 0);

        let requantization = Requantization {
            offsets,
            padded_offsets,
            unsigned_offsets,
            weight_zero_point,
            multiplier,
            output_zero_point,
        };
        (requantization, clamped)
    }
}

/// An implementation of [`gemm_requantize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Scalar,
    Avx2,
    Avx512Vnni,
}

impl Kernel {
    pub const ALL: [Kernel; 3] = [Kernel::Scalar, Kernel::Avx2, Kernel::Avx512Vnni];

    /// Returns the name that [`KERNEL_ENV`] accepts.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512Vnni => "vnni",
        }
    }

    /// Checks whether this CPU has the instructions the kernel needs.
    pub fn is_supported(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Returns the fastest kernel this CPU supports.
    pub fn best_supported() -> Kernel {
        [Kernel::Avx512Vnni, Kernel::Avx2].into_iter().find(|k| k.is_supported()).unwrap_or(Kernel::Scalar)
    }

    /// Returns the kernel [`gemm_requantize`] runs: the one [`KERNEL_ENV`] names, else
    /// [`Kernel::best_supported`]. The variable is read once per process.
    ///
    /// # Panics
    /// If [`KERNEL_ENV`] is set to an unknown name or to a kernel this CPU
    /// lacks, so that a forced benchmark or test never measures another kernel.
    pub fn selected() -> Kernel {
        static SELECTED: OnceLock<Kernel> = OnceLock::new();
        *SELECTED.get_or_init(|| kernel_from_env().unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(Kernel::best_supported))
    }
}

/// Reads [`KERNEL_ENV`]: `None` when it is unset, an error for an unknown
/// name or a kernel this CPU lacks. The command line checks it before any
/// work, so [`Kernel::selected`] only panics for library callers.
pub fn kernel_from_env() -> Result<Option<Kernel>, String> {
    let Ok(name) = std::env::var(KERNEL_ENV) else {
        return Ok(None);
    };
    let kernel: Kernel = name.parse()?;
    if !kernel.is_supported() {
        return Err(format!(
            "{KERNEL_ENV}={name} requests a kernel this CPU does not support; unset it or choose {}",
            Kernel::best_supported().name()
        ));
    }
    Ok(Some(kernel))
}

/// Reads [`THREADS_ENV`]: `None` when it is unset, the thread count for a
/// positive integer or `auto` (all cores), an error otherwise.
pub fn threads_from_env() -> Result<Option<usize>, String> {
    let Ok(value) = std::env::var(THREADS_ENV) else {
        return Ok(None);
    };
    if value == "auto" {
        return Ok(Some(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)));
    }
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(format!("invalid {THREADS_ENV}={value:?}: expected a positive integer or auto; unset it for one thread")),
    }
}

impl FromStr for Kernel {
    type Err = String;

    fn from_str(name: &str) -> Result<Kernel, String> {
        Kernel::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| format!("invalid int8 GEMM kernel {name:?} in {KERNEL_ENV}: expected scalar, avx2 or vnni"))
    }
}

/// Returns the thread count [`gemm_requantize`] uses for a `rows x k x outputs`
/// product: 1 unless [`THREADS_ENV`] is set and the product passes
/// [`PARALLEL_MIN_ROWS`] and [`PARALLEL_MIN_WORK`].
///
/// NOTE: threads are opt-in. On the 2-core machine of docs/BENCHMARKS.md,
/// idle, 2 threads ran the batch-128 forward pass in 1.25 ms against 1.79 ms
/// on one, but with other jobs running they made it about 3x slower. A
/// whole `valid_int8` run (0.09 s, mostly JPEG decoding) did not change.
///
/// # Panics
/// If [`THREADS_ENV`] is neither a positive integer nor `auto`.
pub fn default_threads(rows: usize, k: usize, outputs: usize) -> usize {
    static CONFIGURED: OnceLock<Option<usize>> = OnceLock::new();
    let configured = *CONFIGURED.get_or_init(|| threads_from_env().unwrap_or_else(|e| panic!("{e}")));
    let Some(threads) = configured else {
        return 1;
    };
    if rows < PARALLEL_MIN_ROWS || rows.saturating_mul(k).saturating_mul(outputs) < PARALLEL_MIN_WORK {
        return 1;
    }
    threads
}

/// Computes `output[rows][outputs]` from `input[rows][k]` (both row-major)
/// with [`Kernel::selected`] on [`default_threads`] threads, overwriting the
/// first `rows * outputs` bytes of `output`.
pub fn gemm_requantize(input: &[i8], rows: usize, weights: &PackedWeights, rq: &Requantization, output: &mut [i8]) {
    let threads = default_threads(rows, weights.k, weights.outputs);
    gemm_requantize_with(Kernel::selected(), threads, input, rows, weights, rq, output);
}

/// Runs [`gemm_requantize`] with an explicit kernel and thread count. Threads split
/// the rows into contiguous blocks, so every thread reads all the weights.
///
/// # Panics
/// If the CPU lacks `kernel`, `threads` is 0 or a buffer is too short.
pub fn gemm_requantize_with(
    kernel: Kernel,
    threads: usize,
    input: &[i8],
    rows: usize,
    weights: &PackedWeights,
    rq: &Requantization,
    output: &mut [i8],
) {
    let (k, n) = (weights.k, weights.outputs);
    assert!(input.len() >= rows * k, "input shorter than rows x k");
    assert!(output.len() >= rows * n, "output shorter than rows x outputs");
    assert!(
        rq.offsets.len() == n
            && rq.padded_offsets.len() == weights.padded_outputs()
            && rq.unsigned_offsets.len() == weights.padded_outputs(),
        "requantization built for another layer"
    );
    assert!(kernel.is_supported(), "the int8 GEMM kernel {} needs instructions this CPU lacks", kernel.name());
    assert!(threads > 0, "thread count must be at least 1");

    // Loop 3: split the rows into one contiguous block per thread.
    let block_rows = rows.div_ceil(threads.min(rows.max(1)));
    if block_rows >= rows {
        run_kernel(kernel, &input[..rows * k], rows, weights, rq, &mut output[..rows * n]);
        return;
    }
    std::thread::scope(|scope| {
        let mut rest = &mut output[..rows * n];
        for first_row in (0..rows).step_by(block_rows) {
            let count = block_rows.min(rows - first_row);
            let (block_output, tail) = std::mem::take(&mut rest).split_at_mut(count * n);
            rest = tail;
            let block_input = &input[first_row * k..(first_row + count) * k];
            if first_row + count < rows {
                scope.spawn(move || run_kernel(kernel, block_input, count, weights, rq, block_output));
            } else {
                // The calling thread takes the last block.
                run_kernel(kernel, block_input, count, weights, rq, block_output);
            }
        }
    });
}

/// Runs one kernel on one thread. The caller has checked the buffer sizes.
fn run_kernel(
    kernel: Kernel,
    input: &[i8],
    rows: usize,
    weights: &PackedWeights,
    rq: &Requantization,
    output: &mut [i8],
) {
    match kernel {
        Kernel::Scalar => scalar::gemm_requantize(input, rows, weights, rq, output),
        // SAFETY: `gemm_requantize_with` checked `Kernel::is_supported`, which
        // detects every target feature these functions enable.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => unsafe { avx2::gemm_requantize(input, rows, weights, rq, output) },
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512Vnni => unsafe { vnni::gemm_requantize(input, rows, weights, rq, output) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("only the scalar kernel is supported off x86_64"),
    }
}
