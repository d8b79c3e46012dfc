//! Image decoding to 8-bit pixels, conversion to the network's CHW floats in
//! [0, 1], and Darknet's random exposure/saturation/hue distortion.

use anyhow::{Context, Result};
use rand::Rng;
use std::path::Path;

/// A decoded image: `pixels[y][x][c]` (HWC), 8 bits per value.
#[derive(Debug, Clone)]
pub struct Image8 {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub pixels: Vec<u8>,
}

/// Decodes a JPEG or PNG file into `channels` channels (1: gray, 3: RGB;
/// gray images are repeated to 3 equal channels).
pub fn load_image(path: &Path, channels: usize) -> Result<Image8> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read image {}", path.display()))?;
    let decoded = image::load_from_memory(&bytes)
        .with_context(|| format!("cannot decode image {}: not a readable JPEG or PNG", path.display()))?;
    let (width, height) = (decoded.width() as usize, decoded.height() as usize);
    let pixels = match channels {
        1 => decoded.into_luma8().into_raw(),
        3 => decoded.into_rgb8().into_raw(),
        other => anyhow::bail!("channels={other} is not supported for images; use 1 or 3"),
    };
    Ok(Image8 { width, height, channels, pixels })
}

/// Writes the image as CHW floats in [0, 1] into `out` (`c*h*w` values),
/// center-cropping a larger image (or taking the crop at `offset`) and
/// resizing a smaller one with bilinear interpolation.
pub fn to_chw(img: &Image8, height: usize, width: usize, offset: Option<(usize, usize)>, out: &mut [f32]) {
    let c = img.channels;
    let plane = height * width;
    if img.width >= width && img.height >= height {
        let (dy, dx) = offset.unwrap_or(((img.height - height) / 2, (img.width - width) / 2));
        for y in 0..height {
            for x in 0..width {
                let src = ((y + dy) * img.width + (x + dx)) * c;
                for ch in 0..c {
                    out[ch * plane + y * width + x] = img.pixels[src + ch] as f32 / 255.0;
                }
            }
        }
        return;
    }
    // Bilinear resize to the network size, mapping pixel centers.
    let sy = img.height as f32 / height as f32;
    let sx = img.width as f32 / width as f32;
    for y in 0..height {
        let fy = ((y as f32 + 0.5) * sy - 0.5).max(0.0);
        let y0 = (fy as usize).min(img.height - 1);
        let y1 = (y0 + 1).min(img.height - 1);
        let wy = fy - y0 as f32;
        for x in 0..width {
            let fx = ((x as f32 + 0.5) * sx - 0.5).max(0.0);
            let x0 = (fx as usize).min(img.width - 1);
            let x1 = (x0 + 1).min(img.width - 1);
            let wx = fx - x0 as f32;
            for ch in 0..c {
                let p = |yy: usize, xx: usize| img.pixels[(yy * img.width + xx) * c + ch] as f32;
                let top = p(y0, x0) * (1.0 - wx) + p(y0, x1) * wx;
                let bottom = p(y1, x0) * (1.0 - wx) + p(y1, x1) * wx;
                out[ch * plane + y * width + x] = (top * (1.0 - wy) + bottom * wy) / 255.0;
            }
        }
    }
}

/// Darknet's `rand_scale`: a factor in `[1, s]` (or `[s, 1]`), inverted half the time.
pub fn rand_scale(rng: &mut impl Rng, s: f32) -> f32 {
    let (lo, hi) = if s < 1.0 { (s, 1.0) } else { (1.0, s) };
    let scale = if hi > lo { rng.gen_range(lo..hi) } else { lo };
    if rng.gen::<bool>() {
        scale
    } else {
        1.0 / scale
    }
}

/// Random distortion amounts drawn once per image.
#[derive(Debug, Clone, Copy)]
pub struct Distortion {
    pub hue: f32,
    pub saturation: f32,
    pub exposure: f32,
}

impl Distortion {
    /// Draws `hue` in `[-hue, hue]` and saturation/exposure with [`rand_scale`].
    pub fn random(rng: &mut impl Rng, hue: f32, saturation: f32, exposure: f32) -> Self {
        let hue = if hue > 0.0 { rng.gen_range(-hue..hue) } else { 0.0 };
        Distortion { hue, saturation: rand_scale(rng, saturation), exposure: rand_scale(rng, exposure) }
    }

    pub fn is_identity(&self) -> bool {
        self.hue == 0.0 && self.saturation == 1.0 && self.exposure == 1.0
    }
}

/// Distorts CHW pixels in place in HSV space: hue shifted (wrapping), saturation
/// and value scaled, result clamped to [0, 1]. A one-channel image only
/// gets the exposure.
pub fn distort(chw: &mut [f32], plane: usize, d: Distortion) {
    if d.is_identity() {
        return;
    }
    if chw.len() < 3 * plane {
        for v in chw.iter_mut() {
            *v = (*v * d.exposure).clamp(0.0, 1.0);
        }
        return;
    }
    let (r_plane, rest) = chw.split_at_mut(plane);
    let (g_plane, b_plane) = rest.split_at_mut(plane);
    for i in 0..plane {
        let (r, g, b) = (r_plane[i], g_plane[i], b_plane[i]);
        let max = r.max(g).max(b);
        let min = r.min(g).min(b);
        let delta = max - min;
        let v = (max * d.exposure).clamp(0.0, 1.0);
        if delta == 0.0 || max == 0.0 {
            // Gray: saturation stays 0, so hue and saturation change nothing.
            r_plane[i] = v;
            g_plane[i] = v;
            b_plane[i] = v;
            continue;
        }
        let s = (delta / max * d.saturation).clamp(0.0, 1.0);
        let mut h = if r == max {
            (g - b) / delta
        } else if g == max {
            2.0 + (b - r) / delta
        } else {
            4.0 + (r - g) / delta
        };
        if h < 0.0 {
            h += 6.0;
        }
        h = h / 6.0 + d.hue;
        if h > 1.0 {
            h -= 1.0;
        }
        if h < 0.0 {
            h += 1.0;
        }
        let (r2, g2, b2) = hsv_to_rgb(h, s, v);
        r_plane[i] = r2.clamp(0.0, 1.0);
        g_plane[i] = g2.clamp(0.0, 1.0);
        b_plane[i] = b2.clamp(0.0, 1.0);
    }
}

/// Writes the same values as [`to_chw`] followed by [`distort`]. A crop whose
/// pixels are all gray (as in MNIST) takes a short path: only the exposure
/// acts there, so one plane is computed and copied to the other two.
pub fn to_chw_distorted(img: &Image8, height: usize, width: usize, offset: Option<(usize, usize)>, d: Distortion, out: &mut [f32]) {
    let plane = height * width;
    let crops = img.width >= width && img.height >= height;
    if img.channels == 3 && crops && out.len() == 3 * plane {
        let (dy, dx) = offset.unwrap_or(((img.height - height) / 2, (img.width - width) / 2));
        let row_bytes = img.width * 3;
        let window = |y: usize| &img.pixels[(y + dy) * row_bytes + dx * 3..(y + dy) * row_bytes + (dx + width) * 3];
        let gray = (0..height).all(|y| window(y).chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]));
        if gray {
            let (first, rest) = out.split_at_mut(plane);
            for (y, row) in first.chunks_exact_mut(width).enumerate() {
                for (o, p) in row.iter_mut().zip(window(y).chunks_exact(3)) {
                    // The same operations as to_chw, then distort's gray case.
                    let v = p[0] as f32 / 255.0;
                    *o = if d.is_identity() { v } else { (v * d.exposure).clamp(0.0, 1.0) };
                }
            }
            rest[..plane].copy_from_slice(first);
            rest[plane..].copy_from_slice(first);
            return;
        }
    }
    to_chw(img, height, width, offset, out);
    distort(out, plane, d);
}

fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let h6 = h * 6.0;
    let sector = (h6.floor() as i32).rem_euclid(6);
    let f = h6 - h6.floor();
    let p = v * (1.0 - s);
    let q = v * (1.0 - s * f);
    let t = v * (1.0 - s * (1.0 - f));
    match sector {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn chw_layout_and_scaling() {
        // 2x1 RGB image: pixel 0 = (255, 0, 51), pixel 1 = (0, 255, 102).
        let img = Image8 { width: 2, height: 1, channels: 3, pixels: vec![255, 0, 51, 0, 255, 102] };
        let mut out = [0.0; 6];
        to_chw(&img, 1, 2, None, &mut out);
        assert_eq!(out, [1.0, 0.0, 0.0, 1.0, 0.2, 0.4]);
    }

    #[test]
    fn center_crop_of_larger_image() {
        let img = Image8 { width: 3, height: 3, channels: 1, pixels: (0..9).map(|v| v * 10).collect() };
        let mut out = [0.0; 1];
        to_chw(&img, 1, 1, None, &mut out);
        assert_eq!(out[0], 40.0 / 255.0);
    }

    #[test]
    fn gray_distortion_scales_value_only() {
        let mut px = [0.5, 0.5, 0.5];
        distort(&mut px, 1, Distortion { hue: 0.3, saturation: 1.5, exposure: 1.2 });
        for v in px {
            assert!((v - 0.6).abs() < 1e-6);
        }
        let mut bright = [0.9, 0.9, 0.9];
        distort(&mut bright, 1, Distortion { hue: 0.0, saturation: 1.0, exposure: 1.5 });
        assert_eq!(bright, [1.0, 1.0, 1.0]);
    }

    #[test]
    fn color_round_trip_without_change_of_hue() {
        let mut px = [0.8, 0.4, 0.2];
        distort(&mut px, 1, Distortion { hue: 0.0, saturation: 1.0, exposure: 0.5 });
        assert!((px[0] - 0.4).abs() < 1e-6, "{px:?}");
        assert!((px[1] - 0.2).abs() < 1e-6, "{px:?}");
        assert!((px[2] - 0.1).abs() < 1e-6, "{px:?}");
    }

    #[test]
    fn rand_scale_range() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..100 {
            let s = rand_scale(&mut rng, 0.75);
            assert!((0.75..=1.0 / 0.75).contains(&s), "{s}");
        }
    }

    #[test]
    fn gray_shortcut_equals_to_chw_then_distort() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // 6x5 RGB images: all gray, and gray but for one colored pixel
        // inside the crop; crops at the center and at an offset.
        let gray: Vec<u8> = (0..30).flat_map(|i| [(i * 37 % 256) as u8; 3]).collect();
        let mut colored = gray.clone();
        colored[(2 * 5 + 2) * 3] = 200;
        for pixels in [gray, colored] {
            let img = Image8 { width: 5, height: 6, channels: 3, pixels };
            for offset in [None, Some((1, 0)), Some((2, 1))] {
                for _ in 0..20 {
                    let d = Distortion::random(&mut rng, 0.1, 0.75, 0.75);
                    let mut expected = vec![0.0; 3 * 16];
                    to_chw(&img, 4, 4, offset, &mut expected);
                    distort(&mut expected, 16, d);
                    let mut got = vec![0.0; 3 * 16];
                    to_chw_distorted(&img, 4, 4, offset, d, &mut got);
                    assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), expected.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
                }
            }
        }
    }
}
