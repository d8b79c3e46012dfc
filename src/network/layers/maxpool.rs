//! `[maxpool]`: the maximum of each `size x size` window, per channel, with
//! Darknet's geometry. `padding` is the total padding (Darknet's default
//! `size - 1`), the windows start `padding / 2` before the image, the output
//! is `(h + padding - size) / stride + 1` high, and positions outside the
//! image never win. The same window sweep runs on f32 and on int8, so the
//! int8 form is exact: a monotonic quantization commutes with the maximum.

use super::{zeros, ForwardContext, Layer, Shape};
use anyhow::{bail, Result};
use rayon::prelude::*;

/// The window sweep of a max pool over one CHW image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub size: usize,
    pub stride: usize,
    /// Total padding; the windows start `padding / 2` before the image.
    pub padding: usize,
    pub out_height: usize,
    pub out_width: usize,
}

impl PoolGeometry {
    /// Computes Darknet's output size. Fails when a window would hold no
    /// input position, which Darknet would fill with `-FLT_MAX`.
    pub fn new(input: Shape, size: usize, stride: usize, padding: usize) -> Result<Self> {
        if size == 0 || stride == 0 {
            bail!("size and stride must be at least 1 (found size {size}, stride {stride})");
        }
        if input.h + padding < size || input.w + padding < size {
            bail!("a {size}x{size} window with padding {padding} does not fit the {}x{} input", input.h, input.w);
        }
        let out_height = (input.h + padding - size) / stride + 1;
        let out_width = (input.w + padding - size) / stride + 1;
        let offset = padding / 2;
        // The first window must reach the image and the last must start inside it.
        let first_reaches = size > offset;
        let last_inside = |out: usize, len: usize| (out - 1) * stride < len + offset;
        if !first_reaches || !last_inside(out_height, input.h) || !last_inside(out_width, input.w) {
            bail!("padding {padding} leaves some {size}x{size} windows without an input value; use padding below {}", 2 * size);
        }
        Ok(PoolGeometry { channels: input.c, height: input.h, width: input.w, size, stride, padding, out_height, out_width })
    }

    pub fn output_shape(&self) -> Shape {
        Shape { c: self.channels, h: self.out_height, w: self.out_width }
    }

    pub fn input_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    pub fn output_len(&self) -> usize {
        self.channels * self.out_height * self.out_width
    }

    /// Writes the window maxima of one CHW `image` to `output` (CHW) and
    /// passes each output index with the input index of its maximum to
    /// `record`. The first of equal maxima wins, in row-major window order.
    pub fn max_pool<T: Copy + PartialOrd>(&self, image: &[T], output: &mut [T], mut record: impl FnMut(usize, usize)) {
        let mut out_index = 0;
        for c in 0..self.channels {
            let plane = c * self.height * self.width;
            for oy in 0..self.out_height {
                let (y0, y1) = self.window(oy, self.height);
                for ox in 0..self.out_width {
                    let (x0, x1) = self.window(ox, self.width);
                    // `new` rejected geometries with an empty window.
                    let mut best_index = plane + y0 * self.width + x0;
                    let mut best = image[best_index];
                    for iy in y0..y1 {
                        let line = plane + iy * self.width;
                        for (ix, &value) in image[line + x0..line + x1].iter().enumerate() {
                            if value > best {
                                best = value;
                                best_index = line + x0 + ix;
                            }
                        }
                    }
                    output[out_index] = best;
                    record(out_index, best_index);
                    out_index += 1;
                }
            }
        }
    }

    /// Returns the input positions of window `o` along a dimension of `len`, as a
    /// half-open range: the window covers `o * stride - padding / 2` and the
    /// next `size - 1` positions, clipped to the image.
    fn window(&self, o: usize, len: usize) -> (usize, usize) {
        let offset = self.padding / 2;
        let start = (o * self.stride).saturating_sub(offset);
        let end = (o * self.stride + self.size).saturating_sub(offset).min(len);
        (start, end)
    }
}

/// Max-pools each of `rows` int8 images of `input` into `output`. Input and
/// output share one scale and zero point, so no requantization is needed.
pub fn max_pool_i8(geometry: &PoolGeometry, input: &[i8], rows: usize, output: &mut [i8]) {
    let (in_len, out_len) = (geometry.input_len(), geometry.output_len());
    for (image, out) in input[..rows * in_len].chunks_exact(in_len).zip(output[..rows * out_len].chunks_exact_mut(out_len)) {
        geometry.max_pool(image, out, |_, _| {});
    }
}

pub struct MaxPoolLayer {
    geometry: PoolGeometry,
    output: Vec<f32>,
    delta: Vec<f32>,
    /// Per output value: the index of its maximum within the input image.
    argmax: Vec<usize>,
}

impl MaxPoolLayer {
    pub fn new(input_shape: Shape, size: usize, stride: usize, padding: usize, max_batch: usize) -> Result<Self> {
        let geometry = PoolGeometry::new(input_shape, size, stride, padding)?;
        let n = max_batch * geometry.output_len();
        Ok(MaxPoolLayer { geometry, output: zeros(n), delta: zeros(n), argmax: vec![0; n] })
    }

    pub fn geometry(&self) -> PoolGeometry {
        self.geometry
    }
}

impl Layer for MaxPoolLayer {
    fn kind(&self) -> &'static str {
        "maxpool"
    }

    fn input_shape(&self) -> Shape {
        Shape { c: self.geometry.channels, h: self.geometry.height, w: self.geometry.width }
    }

    fn output_shape(&self) -> Shape {
        self.geometry.output_shape()
    }

    fn forward(&mut self, input: &[f32], batch: usize, _ctx: &mut ForwardContext) {
        let (in_len, out_len) = (self.geometry.input_len(), self.geometry.output_len());
        let geometry = self.geometry;
        self.output[..batch * out_len]
            .par_chunks_mut(out_len)
            .zip(self.argmax[..batch * out_len].par_chunks_mut(out_len))
            .zip(input[..batch * in_len].par_chunks(in_len))
            .for_each(|((output, argmax), image)| geometry.max_pool(image, output, |o, i| argmax[o] = i));
        self.delta[..batch * out_len].fill(0.0);
    }

    /// Routes each output delta to the input position of its maximum.
    fn backward(&mut self, _input: &[f32], batch: usize, input_delta: Option<&mut [f32]>) {
        let Some(input_delta) = input_delta else { return };
        let (in_len, out_len) = (self.geometry.input_len(), self.geometry.output_len());
        for b in 0..batch {
            let image_delta = &mut input_delta[b * in_len..(b + 1) * in_len];
            for (&d, &i) in self.delta[b * out_len..(b + 1) * out_len].iter().zip(&self.argmax[b * out_len..]) {
                image_delta[i] += d;
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
    use crate::quant::affine::QuantParams;

    #[test]
    fn darknet_output_sizes() {
        let g = PoolGeometry::new(Shape { c: 2, h: 24, w: 24 }, 2, 2, 1).unwrap();
        assert_eq!((g.out_height, g.out_width), (12, 12));
        // Odd sizes round up, as Darknet's default padding makes them.
        let g = PoolGeometry::new(Shape { c: 1, h: 7, w: 5 }, 2, 2, 1).unwrap();
        assert_eq!((g.out_height, g.out_width), (4, 3));
        // size 2, stride 1 keeps the size (tiny-YOLO's last pool).
        let g = PoolGeometry::new(Shape { c: 1, h: 13, w: 13 }, 2, 1, 1).unwrap();
        assert_eq!((g.out_height, g.out_width), (13, 13));
        assert!(PoolGeometry::new(Shape { c: 1, h: 4, w: 4 }, 2, 2, 4).is_err());
    }

    #[test]
    fn max_pool_by_hand() {
        // One 3x3 channel, size 2, stride 2, padding 1: windows start at 0,
        // and the last row and column of windows hang over the edge.
        let g = PoolGeometry::new(Shape { c: 1, h: 3, w: 3 }, 2, 2, 1).unwrap();
        let image = [1.0, 5.0, 2.0, 4.0, 3.0, -1.0, -2.0, 7.0, -3.0];
        let mut out = [0.0f32; 4];
        let mut argmax = [0usize; 4];
        g.max_pool(&image, &mut out, |o, i| argmax[o] = i);
        assert_eq!(out, [5.0, 2.0, 7.0, -3.0]);
        assert_eq!(argmax, [1, 2, 7, 8]);
    }

    #[test]
    fn int8_max_pool_equals_quantized_float_pool() {
        let g = PoolGeometry::new(Shape { c: 3, h: 7, w: 6 }, 3, 2, 2).unwrap();
        let params = QuantParams::from_range(-1.3, 2.1);
        let q: Vec<i8> = (0..2 * g.input_len()).map(|i| ((i * 73 + 11) % 256) as i32 as u8 as i8).collect();
        let mut q_out = vec![0i8; 2 * g.output_len()];
        max_pool_i8(&g, &q, 2, &mut q_out);
        for b in 0..2 {
            let real: Vec<f32> = q[b * g.input_len()..(b + 1) * g.input_len()].iter().map(|&v| params.dequantize(v)).collect();
            let mut real_out = vec![0.0f32; g.output_len()];
            g.max_pool(&real, &mut real_out, |_, _| {});
            let expected: Vec<i8> = real_out.iter().map(|&v| params.quantize(v)).collect();
            assert_eq!(&q_out[b * g.output_len()..(b + 1) * g.output_len()], expected.as_slice(), "image {b}");
        }
    }
}
