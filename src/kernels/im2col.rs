//! Convolution as a GEMM: `im2col` unfolds the windows of a CHW image into a
//! matrix, `col2im_add` is its adjoint for the backward pass.
//!
//! A window row index is `k = (c * size + ky) * size + kx`, the order of the
//! weights `[filters][channels][size][size]` in `.weights`, so one row of the
//! weights times one window gives one output value. Input pixel `(iy, ix)` of
//! output position `(oy, ox)` is `iy = oy * stride + ky - pad` (likewise for
//! `ix`); positions outside the image read the padding value.

use anyhow::{bail, Result};
use rayon::prelude::*;

/// The shape of a convolution's sweep over one CHW image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub size: usize,
    pub stride: usize,
    /// Padding on each side (Darknet's `pad`).
    pub pad: usize,
    pub out_height: usize,
    pub out_width: usize,
}

impl ConvGeometry {
    /// Computes Darknet's output size `(h + 2*pad - size) / stride + 1`.
    /// Fails when the window does not fit the padded input or a size is 0.
    pub fn new(channels: usize, height: usize, width: usize, size: usize, stride: usize, pad: usize) -> Result<Self> {
        if size == 0 || stride == 0 || channels == 0 {
            bail!("size, stride and channels must be at least 1 (found size {size}, stride {stride}, channels {channels})");
        }
        if height + 2 * pad < size || width + 2 * pad < size {
            bail!("a {size}x{size} window with padding {pad} does not fit the {height}x{width} input; lower size or raise pad");
        }
        let out_height = (height + 2 * pad - size) / stride + 1;
        let out_width = (width + 2 * pad - size) / stride + 1;
        Ok(ConvGeometry { channels, height, width, size, stride, pad, out_height, out_width })
    }

    /// Values in one window, the GEMM's `K`: `channels * size * size`.
    pub fn fan_in(&self) -> usize {
        self.channels * self.size * self.size
    }

    /// Output positions per image: `out_height * out_width`.
    pub fn positions(&self) -> usize {
        self.out_height * self.out_width
    }

    /// Values of one input image: `channels * height * width`.
    pub fn input_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Returns the output positions `ox` whose input column `ox * stride + kx - pad`
    /// lies inside the image, as a half-open range.
    fn valid_columns(&self, kx: usize) -> (usize, usize) {
        valid_range(kx, self.pad, self.stride, self.width, self.out_width)
    }

    /// Returns the input row of output row `oy` and kernel row `ky`, if inside the image.
    fn input_row(&self, oy: usize, ky: usize) -> Option<usize> {
        (oy * self.stride + ky).checked_sub(self.pad).filter(|&iy| iy < self.height)
    }
}

/// Output indices `o` in `0..outputs` with `o * stride + offset - pad` in `0..len`.
fn valid_range(offset: usize, pad: usize, stride: usize, len: usize, outputs: usize) -> (usize, usize) {
    // First o with o * stride + offset >= pad.
    let first = pad.saturating_sub(offset).div_ceil(stride);
    // Last o with o * stride + offset - pad <= len - 1, plus one.
    let end = if len + pad > offset { ((len + pad - offset - 1) / stride + 1).min(outputs) } else { 0 };
    (first.min(end), end)
}

/// Writes the windows of one CHW `image` as columns: `columns[k * row_stride
/// + p]` for window row `k` and output position `p = oy * out_width + ox`.
/// With `row_stride > positions()` several images can sit side by side (the
/// caller offsets `columns` to the image's first column). Overwrites every
/// value it addresses; padding reads `pad_value`.
pub fn im2col<T: Copy>(g: &ConvGeometry, image: &[T], pad_value: T, columns: &mut [T], row_stride: usize) {
    assert!(image.len() >= g.input_len(), "image shorter than channels x height x width");
    for c in 0..g.channels {
        for ky in 0..g.size {
            for kx in 0..g.size {
                let k = (c * g.size + ky) * g.size + kx;
                im2col_row(g, image, pad_value, c, ky, kx, &mut columns[k * row_stride..k * row_stride + g.positions()]);
            }
        }
    }
}

/// [`im2col`] of `count` consecutive images placed side by side: image `i`
/// fills columns `i * positions()..(i + 1) * positions()` of a matrix
/// `[fan_in][count * positions()]`. Rows are filled in parallel.
pub fn im2col_batch<T: Copy + Send + Sync>(g: &ConvGeometry, images: &[T], count: usize, pad_value: T, columns: &mut [T]) {
    let (len, p) = (g.input_len(), g.positions());
    let width = count * p;
    assert!(images.len() >= count * len, "fewer images than count");
    columns[..g.fan_in() * width].par_chunks_mut(width.max(1)).enumerate().for_each(|(k, row)| {
        let (c, ky, kx) = (k / (g.size * g.size), (k / g.size) % g.size, k % g.size);
        for (i, image) in images[..count * len].chunks_exact(len).enumerate() {
            im2col_row(g, image, pad_value, c, ky, kx, &mut row[i * p..(i + 1) * p]);
        }
    });
}

/// One window row `(c, ky, kx)` of [`im2col`] over all output positions.
fn im2col_row<T: Copy>(g: &ConvGeometry, image: &[T], pad_value: T, c: usize, ky: usize, kx: usize, row: &mut [T]) {
    let (first, end) = g.valid_columns(kx);
    for oy in 0..g.out_height {
        let out = &mut row[oy * g.out_width..(oy + 1) * g.out_width];
        let Some(iy) = g.input_row(oy, ky) else {
            out.fill(pad_value);
            continue;
        };
        let line = &image[(c * g.height + iy) * g.width..(c * g.height + iy + 1) * g.width];
        out[..first].fill(pad_value);
        out[end..].fill(pad_value);
        if first == end {
            continue;
        }
        if g.stride == 1 {
            // ix = ox + kx - pad is contiguous, so the valid run is one copy.
            let start = first + kx - g.pad;
            out[first..end].copy_from_slice(&line[start..start + (end - first)]);
        } else {
            for (ox, v) in out.iter_mut().enumerate().take(end).skip(first) {
                *v = line[ox * g.stride + kx - g.pad];
            }
        }
    }
}

/// Writes the windows of one CHW `image` as rows: `rows[p * fan_in() + k]`,
/// the layout of the int8 GEMM's input (one row per output position).
/// Overwrites `positions() * fan_in()` values; padding reads `pad_value`,
/// which for quantized data must be the input zero point (real 0).
pub fn im2row<T: Copy>(g: &ConvGeometry, image: &[T], pad_value: T, rows: &mut [T]) {
    assert!(image.len() >= g.input_len(), "image shorter than channels x height x width");
    let k = g.fan_in();
    assert!(rows.len() >= g.positions() * k, "rows shorter than positions x fan_in");
    for oy in 0..g.out_height {
        for ox in 0..g.out_width {
            let row = &mut rows[(oy * g.out_width + ox) * k..(oy * g.out_width + ox + 1) * k];
            for c in 0..g.channels {
                for ky in 0..g.size {
                    let window = &mut row[(c * g.size + ky) * g.size..(c * g.size + ky + 1) * g.size];
                    let Some(iy) = g.input_row(oy, ky) else {
                        window.fill(pad_value);
                        continue;
                    };
                    let line = &image[(c * g.height + iy) * g.width..(c * g.height + iy + 1) * g.width];
                    for (kx, v) in window.iter_mut().enumerate() {
                        *v = match (ox * g.stride + kx).checked_sub(g.pad) {
                            Some(ix) if ix < g.width => line[ix],
                            _ => pad_value,
                        };
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds (`+=`) each column value to the input
/// pixel it was read from; values read from padding are dropped.
pub fn col2im_add(g: &ConvGeometry, columns: &[f32], row_stride: usize, image: &mut [f32]) {
    assert!(image.len() >= g.input_len(), "image shorter than channels x height x width");
    for c in 0..g.channels {
        for ky in 0..g.size {
            for kx in 0..g.size {
                let k = (c * g.size + ky) * g.size + kx;
                let row = &columns[k * row_stride..k * row_stride + g.positions()];
                let (first, end) = g.valid_columns(kx);
                for oy in 0..g.out_height {
                    let Some(iy) = g.input_row(oy, ky) else { continue };
                    let line = &mut image[(c * g.height + iy) * g.width..(c * g.height + iy + 1) * g.width];
                    let values = &row[oy * g.out_width..(oy + 1) * g.out_width];
                    if first == end {
                        continue;
                    }
                    if g.stride == 1 {
                        // A contiguous run, which the compiler vectorizes.
                        let start = first + kx - g.pad;
                        for (pixel, &v) in line[start..start + (end - first)].iter_mut().zip(&values[first..end]) {
                            *pixel += v;
                        }
                    } else {
                        for (ox, &v) in values.iter().enumerate().take(end).skip(first) {
                            line[ox * g.stride + kx - g.pad] += v;
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col_batch`]: adds the columns of image `i` into
/// `images[i]`, images in parallel.
pub fn col2im_batch_add(g: &ConvGeometry, columns: &[f32], count: usize, images: &mut [f32]) {
    let (len, p) = (g.input_len(), g.positions());
    let width = count * p;
    images[..count * len].par_chunks_mut(len).enumerate().for_each(|(i, image)| {
        col2im_add(g, &columns[i * p..], width, image);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value im2col must put at window row `k`, position `p`, by the definition.
    fn by_definition(g: &ConvGeometry, image: &[f32], pad_value: f32, k: usize, p: usize) -> f32 {
        let (c, ky, kx) = (k / (g.size * g.size), (k / g.size) % g.size, k % g.size);
        let (oy, ox) = (p / g.out_width, p % g.out_width);
        let iy = (oy * g.stride + ky) as isize - g.pad as isize;
        let ix = (ox * g.stride + kx) as isize - g.pad as isize;
        if iy < 0 || ix < 0 || iy >= g.height as isize || ix >= g.width as isize {
            return pad_value;
        }
        image[(c * g.height + iy as usize) * g.width + ix as usize]
    }

    fn geometries() -> Vec<ConvGeometry> {
        let mut out = Vec::new();
        for &(c, h, w, size, stride, pad) in &[
            (1, 5, 5, 3, 1, 1),
            (2, 7, 6, 3, 2, 1),
            (3, 6, 6, 5, 1, 0),
            (2, 5, 4, 3, 3, 2),
            (1, 4, 4, 1, 1, 0),
            (2, 3, 3, 5, 2, 2),
            (1, 8, 5, 4, 3, 3),
        ] {
            out.push(ConvGeometry::new(c, h, w, size, stride, pad).unwrap());
        }
        out
    }

    #[test]
    fn output_size_is_darknets() {
        let g = ConvGeometry::new(3, 28, 28, 5, 1, 0).unwrap();
        assert_eq!((g.out_height, g.out_width), (24, 24));
        let g = ConvGeometry::new(3, 28, 28, 3, 2, 1).unwrap();
        assert_eq!((g.out_height, g.out_width), (14, 14));
        let g = ConvGeometry::new(1, 7, 7, 3, 2, 1).unwrap();
        assert_eq!((g.out_height, g.out_width), (4, 4));
        assert!(ConvGeometry::new(1, 3, 3, 5, 1, 0).is_err());
    }

    #[test]
    fn im2col_and_im2row_match_definition() {
        for g in geometries() {
            let image: Vec<f32> = (0..g.input_len()).map(|i| i as f32 + 1.0).collect();
            let (k, p) = (g.fan_in(), g.positions());
            // Two images side by side, the second at column offset p.
            let stride = 2 * p + 3;
            let mut columns = vec![f32::NAN; k * stride];
            im2col(&g, &image, -7.0, &mut columns[p..], stride);
            let mut rows = vec![f32::NAN; p * k];
            im2row(&g, &image, -7.0, &mut rows);
            for kk in 0..k {
                for pp in 0..p {
                    let expected = by_definition(&g, &image, -7.0, kk, pp);
                    assert_eq!(columns[kk * stride + p + pp], expected, "{g:?} im2col k {kk} p {pp}");
                    assert_eq!(rows[pp * k + kk], expected, "{g:?} im2row k {kk} p {pp}");
                }
            }
        }
    }

    #[test]
    fn batch_forms_match_single_images() {
        for g in geometries() {
            let (k, p, len) = (g.fan_in(), g.positions(), g.input_len());
            let count = 3;
            let images: Vec<f32> = (0..count * len).map(|i| (i % 17) as f32 - 8.0).collect();
            let mut batch_columns = vec![f32::NAN; k * count * p];
            im2col_batch(&g, &images, count, 0.5, &mut batch_columns);
            let mut single = vec![f32::NAN; k * count * p];
            for i in 0..count {
                im2col(&g, &images[i * len..(i + 1) * len], 0.5, &mut single[i * p..], count * p);
            }
            assert_eq!(batch_columns, single, "{g:?}");

            let mut batch_back = vec![1.0; count * len];
            col2im_batch_add(&g, &batch_columns, count, &mut batch_back);
            let mut single_back = vec![1.0; count * len];
            for i in 0..count {
                col2im_add(&g, &single[i * p..], count * p, &mut single_back[i * len..(i + 1) * len]);
            }
            assert_eq!(batch_back, single_back, "{g:?}");
        }
    }

    #[test]
    fn col2im_is_the_adjoint() {
        // <im2col(x), y> == <x, col2im(y)> for any x, y when padding reads 0.
        for g in geometries() {
            let (k, p) = (g.fan_in(), g.positions());
            let x: Vec<f32> = (0..g.input_len()).map(|i| ((i * 7 % 11) as f32) - 5.0).collect();
            let y: Vec<f32> = (0..k * p).map(|i| ((i * 5 % 13) as f32) - 6.0).collect();
            let mut columns = vec![0.0; k * p];
            im2col(&g, &x, 0.0, &mut columns, p);
            let left: f32 = columns.iter().zip(&y).map(|(a, b)| a * b).sum();
            let mut back = vec![0.0; g.input_len()];
            col2im_add(&g, &y, p, &mut back);
            let right: f32 = x.iter().zip(&back).map(|(a, b)| a * b).sum();
            assert_eq!(left, right, "{g:?}");
        }
    }
}
