//! `[avgpool]`: Darknet's global average pool, the mean of each channel
//! (`c x h x w` in, `c x 1 x 1` out).

use super::{zeros, ForwardContext, Layer, Shape};

/// Averages each channel of `rows` int8 images of `input` (`[rows][c][spatial]`)
/// into `output` (`[rows][c]`). Input and output share one scale and zero
/// point, because `mean(S (q - Z)) = S (mean(q) - Z)`. The only error is
/// rounding the mean to an integer, half away from zero as C's `round`.
pub fn average_pool_i8(input: &[i8], rows: usize, channels: usize, spatial: usize, output: &mut [i8]) {
    let n = spatial as i64;
    for (plane, out) in input[..rows * channels * spatial].chunks_exact(spatial).zip(output.iter_mut()) {
        let sum: i64 = plane.iter().map(|&q| q as i64).sum();
        // round(sum / n) with ties away from zero, in integers.
        let rounded = if sum >= 0 { (2 * sum + n) / (2 * n) } else { -((-2 * sum + n) / (2 * n)) };
        *out = rounded.clamp(-128, 127) as i8;
    }
}

pub struct AvgPoolLayer {
    input_shape: Shape,
    output: Vec<f32>,
    delta: Vec<f32>,
}

impl AvgPoolLayer {
    pub fn new(input_shape: Shape, max_batch: usize) -> Self {
        let n = max_batch * input_shape.c;
        AvgPoolLayer { input_shape, output: zeros(n), delta: zeros(n) }
    }

    fn spatial(&self) -> usize {
        self.input_shape.h * self.input_shape.w
    }
}

impl Layer for AvgPoolLayer {
    fn kind(&self) -> &'static str {
        "avgpool"
    }

    fn input_shape(&self) -> Shape {
        self.input_shape
    }

    fn output_shape(&self) -> Shape {
        Shape::flat(self.input_shape.c)
    }

    fn forward(&mut self, input: &[f32], batch: usize, _ctx: &mut ForwardContext) {
        let (c, spatial) = (self.input_shape.c, self.spatial());
        for (plane, out) in input[..batch * c * spatial].chunks_exact(spatial).zip(self.output.iter_mut()) {
            *out = plane.iter().sum::<f32>() / spatial as f32;
        }
        self.delta[..batch * c].fill(0.0);
    }

    /// Spreads each output delta evenly over its channel.
    fn backward(&mut self, _input: &[f32], batch: usize, input_delta: Option<&mut [f32]>) {
        let Some(input_delta) = input_delta else { return };
        let (c, spatial) = (self.input_shape.c, self.spatial());
        for (plane, &d) in input_delta[..batch * c * spatial].chunks_exact_mut(spatial).zip(&self.delta) {
            let share = d / spatial as f32;
            for v in plane.iter_mut() {
                *v += share;
            }
        }
    }

    fn output(&self) -> &[f32] {
        &self.output
    }

    fn output_mut(&mut self) -> &mut [f32] {
        &mut self.output
    }

    fn delta_mut(&mut self) -> &mut [f32] {
        &mut self.delta
    }

    fn output_and_delta(&mut self) -> (&[f32], &mut [f32]) {
        (&self.output, &mut self.delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_average_rounds_half_away_from_zero() {
        // Channels of 4 values: sums 6 (1.5 -> 2), -6 (-1.5 -> -2), 5 (1.25 -> 1), -7 (-1.75 -> -2).
        let input = [1, 2, 3, 0, -1, -2, -3, 0, 1, 1, 1, 2, -1, -2, -2, -2];
        let mut out = [0i8; 4];
        average_pool_i8(&input, 1, 4, 4, &mut out);
        assert_eq!(out, [2, -2, 1, -2]);

        let extremes = [127, 127, -128, -128];
        let mut out = [0i8; 2];
        average_pool_i8(&extremes, 2, 1, 2, &mut out);
        assert_eq!(out, [127, -128]);
    }
}
