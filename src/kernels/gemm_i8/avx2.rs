//! The AVX2 kernel. Weights and activations are sign-extended to i16 and
//! `vpmaddwd` multiplies adjacent pairs into int32 lanes. A pair sum is at
//! most `2 * 128 * 128 = 32768` in magnitude, so unlike `vpmaddubsw` nothing
//! saturates.
//!
//! One 64-byte panel block holds 16 outputs x 4 `k` (see the layout in the
//! parent module). Each 16-byte quarter, sign-extended, is 4 outputs x 4 `k`
//! in i16; multiplied by the broadcast `a[4q..4q + 4]` it gives 8 lanes with
//! two partial sums per output, which the epilogue adds horizontally.

use super::{PackedWeights, Requantization, RescaleSteps, K_GROUP, PANEL_WIDTH};
use std::arch::x86_64::*;

/// Rows per micro-tile. A tile of 8 outputs keeps `MR * 2 = 10`
/// accumulators, which leaves 6 of the 16 vector registers for 2 weight
/// vectors, a broadcast and a product. (3 rows x 16 outputs needs 17 and
/// spills.)
const MR: usize = 5;

/// Computes `output[rows][outputs]` (see [`super::gemm_requantize`]).
#[target_feature(enable = "avx2")]
pub(super) fn gemm_requantize(
    input: &[i8],
    rows: usize,
    weights: &PackedWeights,
    rq: &Requantization,
    output: &mut [i8],
) {
    let activations = WideRows::pack(input, rows, weights.k, rq.weight_zero_point);
    let operands = Operands {
        activations: &activations,
        panels: &weights.panels,
        k_groups: weights.k_groups(),
        offsets: &rq.padded_offsets,
        outputs: weights.outputs,
        rescale: Rescale::new(&RescaleSteps::of(rq)),
    };

    if rows == 1 {
        // One row reuses no weights across rows, so each tile takes a whole
        // panel and reads every 64-byte block once (measured faster than
        // two half-panel passes, which read each block twice).
        for panel in 0..weights.panel_count() {
            tile::<1, 4>(&operands, 0, panel, 0, output);
        }
        return;
    }

    // Loop 2: through half panels (8 outputs) of the packed weights. The
    // k_groups x 16 panel (37 KB at k = 2352) stays in L2 while loop 1
    // passes over every row.
    for panel in 0..weights.panel_count() {
        for first_quarter in [0, 2] {
            if panel * PANEL_WIDTH + 4 * first_quarter >= weights.outputs {
                break;
            }
            // Loop 1: through strips of MR rows of the packed activations.
            for first_row in (0..rows).step_by(MR) {
                match MR.min(rows - first_row) {
                    1 => tile::<1, 2>(&operands, first_row, panel, first_quarter, output),
                    2 => tile::<2, 2>(&operands, first_row, panel, first_quarter, output),
                    3 => tile::<3, 2>(&operands, first_row, panel, first_quarter, output),
                    4 => tile::<4, 2>(&operands, first_row, panel, first_quarter, output),
                    _ => tile::<MR, 2>(&operands, first_row, panel, first_quarter, output),
                }
            }
        }
    }
}

/// The activations as i16, each row zero-padded to `k_groups * 4` values, and
/// `Z2 * Σ_k a[r][k]` per row.
struct WideRows {
    data: Vec<i16>,
    stride: usize,
    row_terms: Vec<i32>,
}

impl WideRows {
    fn pack(input: &[i8], rows: usize, k: usize, weight_zero_point: i32) -> WideRows {
        let stride = k.div_ceil(K_GROUP) * K_GROUP;
        let mut data = vec![0i16; rows * stride];
        let mut row_terms = Vec::with_capacity(rows);
        for r in 0..rows {
            let row = &input[r * k..(r + 1) * k];
            for (packed, &a) in data[r * stride..r * stride + k].iter_mut().zip(row) {
                *packed = a as i16;
            }
            let sum: i32 = row.iter().map(|&a| a as i32).sum();
            row_terms.push(weight_zero_point.wrapping_mul(sum));
        }
        WideRows { data, stride, row_terms }
    }
}

struct Operands<'a> {
    activations: &'a WideRows,
    panels: &'a [super::PanelBlock],
    k_groups: usize,
    /// [`Requantization::padded_offsets`].
    offsets: &'a [i32],
    outputs: usize,
    rescale: Rescale,
}

/// Computes `ROWS x 4 * QUARTERS` outputs, starting at quarter `first_quarter`
/// (4 outputs each) of panel `panel`: the micro-kernel accumulates over the
/// whole `k`, then requantizes and writes to `output`. `QUARTERS` is 2 or 4.
#[target_feature(enable = "avx2")]
fn tile<const ROWS: usize, const QUARTERS: usize>(
    operands: &Operands,
    first_row: usize,
    panel: usize,
    first_quarter: usize,
    output: &mut [i8],
) {
    let Operands { activations, panels, k_groups, offsets, outputs, .. } = *operands;
    let stride = activations.stride;
    // These bounds make every unchecked load below valid.
    assert!((first_row + ROWS) * stride <= activations.data.len());
    assert!(stride >= k_groups * K_GROUP);
    assert!((panel + 1) * k_groups <= panels.len());
    assert!(first_quarter + QUARTERS <= 4);
    assert!((panel + 1) * PANEL_WIDTH <= offsets.len());

    let a = activations.data[first_row * stride..].as_ptr();
    let w = panels[panel * k_groups..].as_ptr();
    // acc[r][j] contains outputs 4 * (first_quarter + j)..+ 4 of the panel, two
    // lanes each.
    let mut acc = [[_mm256_setzero_si256(); QUARTERS]; ROWS];
    for q in 0..k_groups {
        let mut weight = [_mm256_setzero_si256(); QUARTERS];
        for (j, weight) in weight.iter_mut().enumerate() {
            // SAFETY: block `q` of the panel exists by the third assert, and
            // quarter `first_quarter + j < 4` (fourth assert) lies inside its
            // 64 bytes.
            let bytes = unsafe { _mm_loadu_si128(w.add(q).cast::<i8>().add(16 * (first_quarter + j)).cast()) };
            *weight = _mm256_cvtepi8_epi16(bytes);
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: values `4q..4q + 4` of row `first_row + r` lie inside
            // `data` by the first two asserts (4q + 4 <= k_groups * 4 <= stride).
            let quad = unsafe { a.add(r * stride + K_GROUP * q).cast::<i64>().read_unaligned() };
            let broadcast = _mm256_set1_epi64x(quad);
            for (acc, &weight) in acc.iter_mut().zip(&weight) {
                *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(weight, broadcast));
            }
        }
    }

    let rescale = &operands.rescale;
    for pair in 0..QUARTERS / 2 {
        let first_output = panel * PANEL_WIDTH + 4 * (first_quarter + 2 * pair);
        if first_output >= outputs {
            break;
        }
        let valid = 8.min(outputs - first_output);
        // SAFETY: the last assert puts all 8 offsets inside the slice.
        let offset = unsafe { _mm256_loadu_si256(offsets.as_ptr().add(first_output).cast()) };
        for (r, acc) in acc.iter().enumerate() {
            let row = first_row + r;
            // Pair sums per 128-bit lane: [o0, o1, o4, o5 | o2, o3, o6, o7];
            // the 64-bit permute puts them in order.
            let pairs = _mm256_hadd_epi32(acc[2 * pair], acc[2 * pair + 1]);
            let dot = _mm256_permute4x64_epi64::<0b11_01_10_00>(pairs);
            let row_term = _mm256_set1_epi32(activations.row_terms[row]);
            let total = _mm256_add_epi32(_mm256_sub_epi32(offset, row_term), dot);
            let bytes = pack_bytes(rescale.apply(total));
            let start = row * outputs + first_output;
            output[start..start + valid].copy_from_slice(&bytes[..valid]);
        }
    }
}

/// Narrows 8 int32 lanes already in `[-128, 127]` to bytes.
#[target_feature(enable = "avx2")]
fn pack_bytes(values: __m256i) -> [i8; 8] {
    let words = _mm_packs_epi32(_mm256_castsi256_si128(values), _mm256_extracti128_si256::<1>(values));
    let bytes = _mm_packs_epi16(words, words);
    (_mm_cvtsi128_si64(bytes) as u64).to_le_bytes().map(|b| b as i8)
}

/// [`RescaleSteps`] broadcast to 256-bit vectors.
struct Rescale {
    steps: RescaleSteps,
    multiplier: __m256i,
    left_count: __m128i,
    left_max: __m256i,
    left_min: __m256i,
    right_count: __m128i,
    right_mask: __m256i,
    right_half_mask: __m256i,
    low: __m256i,
    high: __m256i,
    zero_point: __m256i,
}

impl Rescale {
    #[target_feature(enable = "avx2")]
    fn new(steps: &RescaleSteps) -> Rescale {
        let right_mask = ((1i64 << steps.right_shift.min(31)) - 1) as i32;
        Rescale {
            steps: *steps,
            multiplier: _mm256_set1_epi32(steps.multiplier),
            left_count: _mm_cvtsi32_si128(steps.left_shift as i32),
            left_max: _mm256_set1_epi32(i32::MAX >> steps.left_shift),
            left_min: _mm256_set1_epi32(i32::MIN >> steps.left_shift),
            right_count: _mm_cvtsi32_si128(steps.right_shift as i32),
            right_mask: _mm256_set1_epi32(right_mask),
            right_half_mask: _mm256_set1_epi32(right_mask >> 1),
            low: _mm256_set1_epi32(steps.low),
            high: _mm256_set1_epi32(steps.high),
            zero_point: _mm256_set1_epi32(steps.output_zero_point),
        }
    }

    /// Runs [`RescaleSteps::apply`] on 8 lanes; the results lie in `[-128, 127]`.
    #[target_feature(enable = "avx2")]
    fn apply(&self, acc: __m256i) -> __m256i {
        let mut x = acc;
        if self.steps.left_shift > 0 {
            let shifted = _mm256_sll_epi32(x, self.left_count);
            let above = _mm256_cmpgt_epi32(x, self.left_max);
            let below = _mm256_cmpgt_epi32(self.left_min, x);
            x = _mm256_blendv_epi8(shifted, _mm256_set1_epi32(i32::MAX), above);
            x = _mm256_blendv_epi8(x, _mm256_set1_epi32(i32::MIN), below);
        }

        // The high multiply on the even and the odd lanes, as in the AVX-512
        // kernel: bits 31..62 of `p + 2^30` are the result.
        let half = _mm256_set1_epi64x(1 << 30);
        let even = _mm256_add_epi64(_mm256_mul_epi32(x, self.multiplier), half);
        let odd = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64::<32>(x), self.multiplier), half);
        let mut high = _mm256_blend_epi32::<0b1010_1010>(_mm256_srli_epi64::<31>(even), _mm256_slli_epi64::<1>(odd));
        if self.steps.can_overflow() {
            let both_min = _mm256_cmpeq_epi32(x, _mm256_set1_epi32(i32::MIN));
            high = _mm256_blendv_epi8(high, _mm256_set1_epi32(i32::MAX), both_min);
        }

        let shifted = match self.steps.right_shift {
            0 => high,
            1..=31 => {
                let remainder = _mm256_and_si256(high, self.right_mask);
                let threshold = _mm256_sub_epi32(self.right_half_mask, _mm256_srai_epi32::<31>(high));
                // -1 where the remainder passes the threshold, else 0.
                let round_up = _mm256_cmpgt_epi32(remainder, threshold);
                _mm256_sub_epi32(_mm256_sra_epi32(high, self.right_count), round_up)
            }
            _ => _mm256_setzero_si256(),
        };

        _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(shifted, self.low), self.high), self.zero_point)
    }
}
