//! `.qparams` (per layer: f32 S1, S2, S3, i8 Z1, Z2, Z3; 15 bytes) and
//! `.qweights` (per layer: i32 `biases[outputs]`, i8 weights in `.weights`
//! order). No headers; little-endian.

use super::atomic::write_atomic;
use super::weights::group_digits;
use crate::network::layers::ParamLayout;
use crate::quant::affine::QuantParams;
use anyhow::{bail, Context, Result};
use std::path::Path;

/// Bytes per layer in `.qparams`.
pub const QPARAMS_LAYER_BYTES: usize = 15;

/// Scale and zero point of a layer's input (S1/Z1), weights (S2/Z2) and output (S3/Z3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerQParams {
    pub input: QuantParams,
    pub weight: QuantParams,
    pub output: QuantParams,
}

/// Integer parameters of one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerQWeights {
    pub biases: Vec<i32>,
    pub weights: Vec<i8>,
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| {
        format!("cannot read {what} file {}; check the path (qat_int8 DATA CFG WEIGHTS writes it to BACKUP)", path.display())
    })
}

fn check_size(bytes: &[u8], what: &str, expected: usize, source: &Path, cfg_name: &Path) -> Result<()> {
    if bytes.len() != expected {
        let problem = if bytes.len() < expected {
            "it is truncated or was written for a smaller network"
        } else {
            "it has extra bytes or was written for a larger network"
        };
        bail!(
            "{what} file {}: expected {} bytes for {}, found {}; {problem}, so nothing was loaded. Pass the file written for this cfg",
            source.display(),
            group_digits(expected),
            cfg_name.display(),
            group_digits(bytes.len())
        );
    }
    Ok(())
}

/// Reads `layers` entries from a `.qparams` file.
pub fn read_qparams(path: &Path, layers: usize, cfg_name: &Path) -> Result<Vec<LayerQParams>> {
    let bytes = read_file(path, ".qparams")?;
    decode_qparams(&bytes, layers, path, cfg_name)
}

/// Decodes the bytes of a `.qparams` file with `layers` entries; `source`
/// and `cfg_name` are only used in messages.
pub fn decode_qparams(bytes: &[u8], layers: usize, source: &Path, cfg_name: &Path) -> Result<Vec<LayerQParams>> {
    let expected = layers.checked_mul(QPARAMS_LAYER_BYTES).context("the number of layers is too large")?;
    check_size(bytes, ".qparams", expected, source, cfg_name)?;
    let mut out = Vec::with_capacity(layers);
    for (index, chunk) in bytes.chunks_exact(QPARAMS_LAYER_BYTES).enumerate() {
        let f = |i: usize| f32::from_le_bytes([chunk[i], chunk[i + 1], chunk[i + 2], chunk[i + 3]]);
        let (s1, s2, s3) = (f(0), f(4), f(8));
        for (name, s) in [("S1", s1), ("S2", s2), ("S3", s3)] {
            if !(s.is_finite() && s > 0.0) {
                bail!(
                    ".qparams file {}: layer {index} has {name} = {s}, but scales must be positive and finite; the file is damaged or is not a .qparams file",
                    source.display()
                );
            }
        }
        out.push(LayerQParams {
            input: QuantParams { scale: s1, zero_point: chunk[12] as i8 },
            weight: QuantParams { scale: s2, zero_point: chunk[13] as i8 },
            output: QuantParams { scale: s3, zero_point: chunk[14] as i8 },
        });
    }
    Ok(out)
}

/// Encodes `.qparams`.
pub fn encode_qparams(params: &[LayerQParams]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(params.len() * QPARAMS_LAYER_BYTES);
    for p in params {
        for s in [p.input.scale, p.weight.scale, p.output.scale] {
            bytes.extend_from_slice(&s.to_le_bytes());
        }
        for z in [p.input.zero_point, p.weight.zero_point, p.output.zero_point] {
            bytes.push(z as u8);
        }
    }
    bytes
}

pub fn write_qparams(path: &Path, params: &[LayerQParams]) -> Result<()> {
    let bytes = encode_qparams(params);
    write_atomic(path, |w| Ok(w.write_all(&bytes)?))
}

/// Bytes of a `.qweights` file for these layers, or `None` when the count
/// does not fit in `usize`.
pub fn qweights_size(layouts: &[ParamLayout]) -> Option<usize> {
    layouts.iter().try_fold(0usize, |total, l| {
        let weights = l.outputs().checked_mul(l.fan_in())?;
        let biases = l.outputs().checked_mul(4)?;
        total.checked_add(weights)?.checked_add(biases)
    })
}

/// Reads a `.qweights` file laid out for `layouts`.
pub fn read_qweights(path: &Path, layouts: &[ParamLayout], cfg_name: &Path) -> Result<Vec<LayerQWeights>> {
    let bytes = read_file(path, ".qweights")?;
    decode_qweights(&bytes, layouts, path, cfg_name)
}

/// Decodes the bytes of a `.qweights` file laid out for `layouts`; `source`
/// and `cfg_name` are only used in messages.
pub fn decode_qweights(bytes: &[u8], layouts: &[ParamLayout], source: &Path, cfg_name: &Path) -> Result<Vec<LayerQWeights>> {
    let expected = qweights_size(layouts).with_context(|| format!("{}: the network is too large to address", cfg_name.display()))?;
    check_size(bytes, ".qweights", expected, source, cfg_name)?;
    let mut offset = 0;
    let mut out = Vec::with_capacity(layouts.len());
    for layout in layouts {
        let n = layout.outputs();
        let count = n * layout.fan_in();
        let biases = bytes[offset..offset + 4 * n]
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        offset += 4 * n;
        let weights = bytes[offset..offset + count].iter().map(|&b| b as i8).collect();
        offset += count;
        out.push(LayerQWeights { biases, weights });
    }
    Ok(out)
}

/// Encodes `.qweights`.
pub fn encode_qweights(layers: &[LayerQWeights]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for layer in layers {
        for b in &layer.biases {
            bytes.extend_from_slice(&b.to_le_bytes());
        }
        bytes.extend(layer.weights.iter().map(|&w| w as u8));
    }
    bytes
}

pub fn write_qweights(path: &Path, layers: &[LayerQWeights]) -> Result<()> {
    let bytes = encode_qweights(layers);
    write_atomic(path, |w| Ok(w.write_all(&bytes)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workshop_sizes() {
        let layouts = [
            ParamLayout::Connected { inputs: 2352, outputs: 1024 },
            ParamLayout::Connected { inputs: 1024, outputs: 512 },
            ParamLayout::Connected { inputs: 512, outputs: 256 },
            ParamLayout::Connected { inputs: 256, outputs: 10 },
        ];
        assert_eq!(qweights_size(&layouts), Some(3_073_576));
        assert_eq!(4 * QPARAMS_LAYER_BYTES, 60);
    }

    #[test]
    fn qparams_round_trip() {
        let dir = std::env::temp_dir().join(format!("darknet-qp-{}", std::process::id()));
        let path = dir.join("x.qparams");
        let p = LayerQParams {
            input: QuantParams { scale: 1.0 / 255.0, zero_point: -128 },
            weight: QuantParams { scale: 0.001, zero_point: -3 },
            output: QuantParams { scale: 0.2, zero_point: 5 },
        };
        write_qparams(&path, &[p, p]).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 30);
        assert_eq!(read_qparams(&path, 2, Path::new("c.cfg")).unwrap(), vec![p, p]);
        let err = read_qparams(&path, 3, Path::new("c.cfg")).unwrap_err().to_string();
        assert!(err.contains("expected 45 bytes"), "{err}");
        assert!(err.contains("found 30"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn qweights_round_trip() {
        let dir = std::env::temp_dir().join(format!("darknet-qw-{}", std::process::id()));
        let path = dir.join("x.qweights");
        let layouts = [ParamLayout::Connected { inputs: 3, outputs: 2 }];
        let layer = LayerQWeights { biases: vec![-5, i32::MAX], weights: vec![1, -2, 3, -128, 127, 0] };
        write_qweights(&path, std::slice::from_ref(&layer)).unwrap();
        assert_eq!(read_qweights(&path, &layouts, Path::new("c.cfg")).unwrap(), vec![layer]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
