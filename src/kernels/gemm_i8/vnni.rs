//! The AVX-512 VNNI kernel. `vpdpbusd` multiplies 4 unsigned activation bytes
//! by 4 signed weight bytes and adds the 4 products to one int32 lane without
//! saturation, so one instruction performs 64 multiply-adds on a 512-bit vector.

use super::{PackedWeights, Requantization, RescaleSteps, K_GROUP, PANEL_WIDTH};
use std::arch::x86_64::*;

/// Rows per micro-tile.
const MR: usize = 6;
/// Panels per micro-tile, so a tile covers `NR = 4 * 16 = 64` outputs. The
/// tile keeps `MR * NV = 24` accumulators and 4 weight vectors in the 32
/// vector registers.
const NV: usize = 4;

/// Computes `output[rows][outputs]` (see [`super::gemm_requantize`]).
#[target_feature(enable = "avx512f,avx512vnni")]
pub(super) fn gemm_requantize(
    input: &[i8],
    rows: usize,
    weights: &PackedWeights,
    rq: &Requantization,
    output: &mut [i8],
) {
    let activations = UnsignedRows::pack(input, rows, weights.k, rq.weight_zero_point);
    let operands = Operands {
        activations: &activations,
        panels: &weights.panels,
        k_groups: weights.k_groups(),
        offsets: &rq.unsigned_offsets,
        outputs: weights.outputs,
        rescale: Rescale::new(&RescaleSteps::of(rq)),
    };
    let panel_count = weights.panel_count();

    // Loop 2: through groups of NV panels of the packed weights. The group's
    // k_groups x 64 outputs (150 KB at k = 2352) stays in L2 while loop 1
    // passes over every row.
    for first_panel in (0..panel_count).step_by(NV) {
        let panels = NV.min(panel_count - first_panel);

        // Loop 1: through strips of MR rows of the packed activations.
        for first_row in (0..rows).step_by(MR) {
            let strip_rows = MR.min(rows - first_row);
            match panels {
                1 => tile_rows::<1>(&operands, strip_rows, first_row, first_panel, output),
                2 => tile_rows::<2>(&operands, strip_rows, first_row, first_panel, output),
                3 => tile_rows::<3>(&operands, strip_rows, first_row, first_panel, output),
                _ => tile_rows::<NV>(&operands, strip_rows, first_row, first_panel, output),
            }
        }
    }
}

/// The activations as `a + 128` in `u8`, each row padded with 128 (a zero
/// activation) to `k_groups * 4` bytes, and `Z2 * Σ_k a[r][k]` per row.
struct UnsignedRows {
    data: Vec<u8>,
    stride: usize,
    row_terms: Vec<i32>,
}

impl UnsignedRows {
    fn pack(input: &[i8], rows: usize, k: usize, weight_zero_point: i32) -> UnsignedRows {
        let stride = k.div_ceil(K_GROUP) * K_GROUP;
        let mut data = vec![128u8; rows * stride];
        let mut row_terms = Vec::with_capacity(rows);
        for r in 0..rows {
            let row = &input[r * k..(r + 1) * k];
            for (packed, &a) in data[r * stride..r * stride + k].iter_mut().zip(row) {
                *packed = (a as u8) ^ 0x80;
            }
            let sum: i32 = row.iter().map(|&a| a as i32).sum();
            row_terms.push(weight_zero_point.wrapping_mul(sum));
        }
        UnsignedRows { data, stride, row_terms }
    }
}

struct Operands<'a> {
    activations: &'a UnsignedRows,
    panels: &'a [super::PanelBlock],
    k_groups: usize,
    /// [`Requantization::unsigned_offsets`], padded to whole panels.
    offsets: &'a [i32],
    outputs: usize,
    rescale: Rescale,
}

/// Picks the micro-kernel compiled for `rows` rows.
#[target_feature(enable = "avx512f,avx512vnni")]
fn tile_rows<const PANELS: usize>(
    operands: &Operands,
    rows: usize,
    first_row: usize,
    first_panel: usize,
    output: &mut [i8],
) {
    match rows {
        1 => tile::<1, PANELS>(operands, first_row, first_panel, output),
        2 => tile::<2, PANELS>(operands, first_row, first_panel, output),
        3 => tile::<3, PANELS>(operands, first_row, first_panel, output),
        4 => tile::<4, PANELS>(operands, first_row, first_panel, output),
        5 => tile::<5, PANELS>(operands, first_row, first_panel, output),
        _ => tile::<MR, PANELS>(operands, first_row, first_panel, output),
    }
}

/// Computes `ROWS x 16 * PANELS` outputs from row `first_row` and panel
/// `first_panel` on: the micro-kernel accumulates over the whole `k`, then
/// requantizes and writes to `output`.
#[target_feature(enable = "avx512f,avx512vnni")]
fn tile<const ROWS: usize, const PANELS: usize>(
    operands: &Operands,
    first_row: usize,
    first_panel: usize,
    output: &mut [i8],
) {
    let Operands { activations, panels, k_groups, offsets, outputs, .. } = *operands;
    let stride = activations.stride;
    // These bounds make every unchecked load below valid.
    assert!((first_row + ROWS) * stride <= activations.data.len());
    assert!(stride >= k_groups * K_GROUP);
    assert!((first_panel + PANELS) * k_groups <= panels.len());
    assert!((first_panel + PANELS) * PANEL_WIDTH <= offsets.len());
    assert!((first_row + ROWS) * outputs <= output.len());

    let a = activations.data[first_row * stride..].as_ptr();
    let w = panels[first_panel * k_groups..].as_ptr();
    let mut acc = [[_mm512_setzero_si512(); PANELS]; ROWS];
    for q in 0..k_groups {
        let mut weight = [_mm512_setzero_si512(); PANELS];
        for (v, weight) in weight.iter_mut().enumerate() {
            // SAFETY: block `v * k_groups + q` of the slice starting at panel
            // `first_panel` exists by the third assert (q < k_groups, v < PANELS).
            *weight = unsafe { _mm512_loadu_si512(w.add(v * k_groups + q).cast()) };
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: bytes `4q..4q + 4` of row `first_row + r` lie inside
            // `data` by the first two asserts (4q + 4 <= k_groups * 4 <= stride).
            let quad = unsafe { a.add(r * stride + K_GROUP * q).cast::<i32>().read_unaligned() };
            let broadcast = _mm512_set1_epi32(quad);
            for (acc, &weight) in acc.iter_mut().zip(&weight) {
                *acc = _mm512_dpbusd_epi32(*acc, broadcast, weight);
            }
        }
    }

    let rescale = &operands.rescale;
    for (r, acc) in acc.iter().enumerate() {
        let row = first_row + r;
        let row_term = _mm512_set1_epi32(activations.row_terms[row]);
        for (v, &acc) in acc.iter().enumerate() {
            let first_output = (first_panel + v) * PANEL_WIDTH;
            if first_output >= outputs {
                break;
            }
            // SAFETY: the fourth assert puts all 16 offsets inside the slice.
            let offset = unsafe { _mm512_loadu_si512(offsets.as_ptr().add(first_output).cast()) };
            let total = _mm512_add_epi32(_mm512_sub_epi32(offset, row_term), acc);
            let values = rescale.apply(total);
            let valid = PANEL_WIDTH.min(outputs - first_output);
            let mask: __mmask16 = ((1u32 << valid) - 1) as __mmask16;
            // SAFETY: the store writes only the `valid` bytes
            // `row * outputs + first_output..+ valid`, all below
            // `(row + 1) * outputs <= output.len()` by the last assert.
            unsafe {
                _mm512_mask_cvtepi32_storeu_epi8(
                    output.as_mut_ptr().add(row * outputs + first_output).cast(),
                    mask,
                    values,
                )
            };
        }
    }
}

/// [`RescaleSteps`] broadcast to 512-bit vectors.
struct Rescale {
    steps: RescaleSteps,
    multiplier: __m512i,
    left_count: __m128i,
    left_max: __m512i,
    left_min: __m512i,
    right_count: __m128i,
    right_mask: __m512i,
    right_half_mask: __m512i,
    low: __m512i,
    high: __m512i,
    zero_point: __m512i,
}

impl Rescale {
    #[target_feature(enable = "avx512f")]
    fn new(steps: &RescaleSteps) -> Rescale {
        let right_mask = ((1i64 << steps.right_shift.min(31)) - 1) as i32;
        Rescale {
            steps: *steps,
            multiplier: _mm512_set1_epi32(steps.multiplier),
            left_count: _mm_cvtsi32_si128(steps.left_shift as i32),
            left_max: _mm512_set1_epi32(i32::MAX >> steps.left_shift),
            left_min: _mm512_set1_epi32(i32::MIN >> steps.left_shift),
            right_count: _mm_cvtsi32_si128(steps.right_shift as i32),
            right_mask: _mm512_set1_epi32(right_mask),
            right_half_mask: _mm512_set1_epi32(right_mask >> 1),
            low: _mm512_set1_epi32(steps.low),
            high: _mm512_set1_epi32(steps.high),
            zero_point: _mm512_set1_epi32(steps.output_zero_point),
        }
    }

    /// Runs [`RescaleSteps::apply`] on 16 lanes; the results lie in `[-128, 127]`.
    #[target_feature(enable = "avx512f")]
    fn apply(&self, acc: __m512i) -> __m512i {
        let mut x = acc;
        if self.steps.left_shift > 0 {
            let shifted = _mm512_sll_epi32(x, self.left_count);
            let above = _mm512_cmpgt_epi32_mask(x, self.left_max);
            let below = _mm512_cmplt_epi32_mask(x, self.left_min);
            x = _mm512_mask_blend_epi32(above, shifted, _mm512_set1_epi32(i32::MAX));
            x = _mm512_mask_blend_epi32(below, x, _mm512_set1_epi32(i32::MIN));
        }

        // The high multiply on the even and the odd lanes. `vpmuldq` reads the
        // low 32 bits of each 64-bit lane, so the odd lanes are moved down
        // first. Bits 31..62 of `p + 2^30` are the result: the even lanes
        // shift them down to bits 0..31, the odd lanes up to bits 32..63.
        let half = _mm512_set1_epi64(1 << 30);
        let even = _mm512_add_epi64(_mm512_mul_epi32(x, self.multiplier), half);
        let odd = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64::<32>(x), self.multiplier), half);
        let mut high = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64::<31>(even), _mm512_slli_epi64::<1>(odd));
        if self.steps.can_overflow() {
            let min = _mm512_set1_epi32(i32::MIN);
            high = _mm512_mask_blend_epi32(_mm512_cmpeq_epi32_mask(x, min), high, _mm512_set1_epi32(i32::MAX));
        }

        let shifted = match self.steps.right_shift {
            0 => high,
            1..=31 => {
                let remainder = _mm512_and_si512(high, self.right_mask);
                let threshold = _mm512_sub_epi32(self.right_half_mask, _mm512_srai_epi32::<31>(high));
                let round_up = _mm512_cmpgt_epi32_mask(remainder, threshold);
                let quotient = _mm512_sra_epi32(high, self.right_count);
                _mm512_mask_add_epi32(quotient, round_up, quotient, _mm512_set1_epi32(1))
            }
            _ => _mm512_setzero_si512(),
        };

        _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(shifted, self.low), self.high), self.zero_point)
    }
}
