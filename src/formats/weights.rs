//! Darknet `.weights`: a header `i32 major, minor, revision`, `seen` as u64
//! (u32 for old files), then per layer with parameters, in cfg order:
//! connected `biases, weights[outputs][inputs], (scales, rolling_mean,
//! rolling_variance)`; convolutional `biases, (scales, rolling_mean,
//! rolling_variance), weights[filters][channels][size][size]`. All little-endian.
//! Files whose major or minor exceeds 1000 store connected weights transposed.

use super::atomic::write_atomic;
use crate::network::layers::{ParamLayout, Params};
use crate::network::Network;
use anyhow::{bail, Context, Result};
use byteorder::{LittleEndian, ReadBytesExt, WriteBytesExt};
use std::io::{Cursor, Write};
use std::path::Path;

/// The header of a `.weights` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightsHeader {
    pub major: i32,
    pub minor: i32,
    pub revision: i32,
    pub seen: u64,
}

impl WeightsHeader {
    /// Darknet stores `seen` as u64 from version 0.2 on. The sum is taken in
    /// i64 because a damaged header can hold any i32.
    fn seen_is_u64(major: i32, minor: i32) -> bool {
        major as i64 * 10 + minor as i64 >= 2 && major < 1000 && minor < 1000
    }

    fn transposed(&self) -> bool {
        self.major > 1000 || self.minor > 1000
    }

    fn byte_len(&self) -> usize {
        if Self::seen_is_u64(self.major, self.minor) {
            20
        } else {
            16
        }
    }
}

/// Bytes of one layer's parameters in the file.
pub fn layer_bytes(params: &Params) -> usize {
    let n = params.layout.outputs();
    let bn = if params.batch_norm.is_some() { 3 * n } else { 0 };
    4 * (n + bn + params.weights.len())
}

/// Bytes a `.weights` file for `net` must have, header included.
pub fn expected_size(net: &Network, header_bytes: usize) -> usize {
    header_bytes + net.layers.iter().filter_map(|l| l.params()).map(layer_bytes).sum::<usize>()
}

fn read_f32s(cursor: &mut Cursor<&[u8]>, out: &mut [f32]) -> Result<()> {
    cursor
        .read_f32_into::<LittleEndian>(out)
        .context("the file ended early, although its size matched; this is a bug in the size check")
}

/// Decodes the header at the start of `bytes`.
fn decode_header(bytes: &[u8], source: &Path) -> Result<WeightsHeader> {
    if bytes.len() < 16 {
        bail!(
            "weights file {} is {} bytes, too short for a Darknet header (at least 16 bytes); it is truncated or not a .weights file",
            source.display(),
            bytes.len()
        );
    }
    let mut cursor = Cursor::new(bytes);
    let major = cursor.read_i32::<LittleEndian>()?;
    let minor = cursor.read_i32::<LittleEndian>()?;
    let revision = cursor.read_i32::<LittleEndian>()?;
    let seen = if WeightsHeader::seen_is_u64(major, minor) {
        if bytes.len() < 20 {
            bail!(
                "weights file {} ends inside its header: version {major}.{minor} needs 20 header bytes, the file has {}",
                source.display(),
                bytes.len()
            );
        }
        cursor.read_u64::<LittleEndian>()?
    } else {
        cursor.read_u32::<LittleEndian>()? as u64
    };
    Ok(WeightsHeader { major, minor, revision, seen })
}

/// Reads `path` into the parameters of `net` and sets `net.seen`. Fails,
/// leaving `net` untouched, when the size differs from what `cfg_name` implies
/// or a value is not finite.
pub fn load_weights(net: &mut Network, path: &Path, cfg_name: &Path) -> Result<WeightsHeader> {
    let bytes = std::fs::read(path).with_context(|| {
        format!("cannot read weights file {}; check the path, or leave WEIGHTS out to train from random weights", path.display())
    })?;
    decode_weights(net, &bytes, path, cfg_name)
}

/// Decodes the bytes of a `.weights` file into `net`, as [`load_weights`];
/// `source` and `cfg_name` are only used in messages.
pub fn decode_weights(net: &mut Network, bytes: &[u8], source: &Path, cfg_name: &Path) -> Result<WeightsHeader> {
    let header = decode_header(bytes, source)?;
    let expected = expected_size(net, header.byte_len());
    if bytes.len() != expected {
        let problem = if bytes.len() < expected {
            "it is truncated or was written for a smaller network"
        } else {
            "it has extra bytes or was written for a larger network"
        };
        bail!(
            "weights file {}: expected {} bytes for {}, found {}; {problem}, so no weights were loaded. Pass the weights written for this cfg",
            source.display(),
            group_digits(expected),
            cfg_name.display(),
            group_digits(bytes.len())
        );
    }

    // Decode into copies first so a bad value leaves the network unchanged.
    let mut cursor = Cursor::new(bytes);
    cursor.set_position(header.byte_len() as u64);
    let mut loaded: Vec<(usize, Params)> = Vec::new();
    for (index, layer) in net.layers.iter().enumerate() {
        let Some(params) = layer.params() else { continue };
        let mut p = params.clone();
        let n = p.layout.outputs();
        read_f32s(&mut cursor, &mut p.biases)?;
        match p.layout {
            ParamLayout::Connected { inputs, outputs } => {
                read_f32s(&mut cursor, &mut p.weights)?;
                if header.transposed() {
                    let stored = p.weights.clone();
                    for i in 0..inputs {
                        for o in 0..outputs {
                            p.weights[o * inputs + i] = stored[i * outputs + o];
                        }
                    }
                }
                if let Some(bn) = p.batch_norm.as_mut() {
                    read_f32s(&mut cursor, &mut bn.scales[..n])?;
                    read_f32s(&mut cursor, &mut bn.rolling_mean[..n])?;
                    read_f32s(&mut cursor, &mut bn.rolling_variance[..n])?;
                }
            }
            ParamLayout::Convolutional { .. } => {
                if let Some(bn) = p.batch_norm.as_mut() {
                    read_f32s(&mut cursor, &mut bn.scales[..n])?;
                    read_f32s(&mut cursor, &mut bn.rolling_mean[..n])?;
                    read_f32s(&mut cursor, &mut bn.rolling_variance[..n])?;
                }
                read_f32s(&mut cursor, &mut p.weights)?;
            }
        }
        if !params_are_finite(&p) {
            bail!(
                "weights file {}: layer {} ([{}]) contains NaN or infinite values; the training that wrote it diverged, so retrain or use an earlier file",
                source.display(),
                index,
                layer.kind()
            );
        }
        let negative = p.batch_norm.as_ref().and_then(|bn| bn.rolling_variance.iter().enumerate().find(|(_, &v)| v < 0.0));
        if let Some((output, variance)) = negative {
            bail!(
                "weights file {}: layer {} ([{}]) has rolling variance {} for output {}, but a variance cannot be negative; the file is damaged, so use another copy or retrain",
                source.display(),
                index,
                layer.kind(),
                variance,
                output
            );
        }
        loaded.push((index, p));
    }
    for (index, p) in loaded {
        let Some(target) = net.layers[index].params_mut() else {
            bail!("layer {index} lost its parameters while loading; this is a bug");
        };
        target.biases = p.biases;
        target.weights = p.weights;
        target.batch_norm = p.batch_norm;
        if let Some(bn) = target.batch_norm.as_mut() {
            bn.scale_updates.fill(0.0);
        }
        target.bias_updates.fill(0.0);
        target.weight_updates.fill(0.0);
        target.forward_weights = None;
    }
    net.seen = header.seen;
    Ok(header)
}

/// True when every value that `.weights` stores for these parameters is finite.
pub fn params_are_finite(p: &Params) -> bool {
    let batch_norm_finite = p.batch_norm.as_ref().is_none_or(|bn| {
        bn.scales.iter().chain(&bn.rolling_mean).chain(&bn.rolling_variance).all(|v| v.is_finite())
    });
    p.biases.iter().chain(&p.weights).all(|v| v.is_finite()) && batch_norm_finite
}

/// True when every layer's stored parameters are finite.
pub fn network_is_finite(net: &Network) -> bool {
    net.layers.iter().filter_map(|l| l.params()).all(params_are_finite)
}

/// Encodes the parameters of `net` in Darknet's format, version 0.2.0 with a u64 `seen`.
pub fn encode_weights(net: &Network, out: &mut dyn Write) -> Result<()> {
    out.write_i32::<LittleEndian>(0)?;
    out.write_i32::<LittleEndian>(2)?;
    out.write_i32::<LittleEndian>(0)?;
    out.write_u64::<LittleEndian>(net.seen)?;
    let mut put = |values: &[f32], out: &mut dyn Write| -> Result<()> {
        let mut buf = Vec::with_capacity(values.len() * 4);
        for v in values {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        out.write_all(&buf)?;
        Ok(())
    };
    for layer in &net.layers {
        let Some(p) = layer.params() else { continue };
        put(&p.biases, out)?;
        let bn_fields = |out: &mut dyn Write, put: &mut dyn FnMut(&[f32], &mut dyn Write) -> Result<()>| -> Result<()> {
            if let Some(bn) = &p.batch_norm {
                put(&bn.scales, out)?;
                put(&bn.rolling_mean, out)?;
                put(&bn.rolling_variance, out)?;
            }
            Ok(())
        };
        match p.layout {
            ParamLayout::Connected { .. } => {
                put(&p.weights, out)?;
                bn_fields(out, &mut put)?;
            }
            ParamLayout::Convolutional { .. } => {
                bn_fields(out, &mut put)?;
                put(&p.weights, out)?;
            }
        }
    }
    Ok(())
}

/// Writes `net` to `path` atomically.
pub fn save_weights(net: &Network, path: &Path) -> Result<()> {
    write_atomic(path, |w| encode_weights(net, w))
}

/// Formats a count with thousands separators: 12272700 -> "12,272,700".
pub fn group_digits(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cfg::NetworkConfig;

    /// 2 inputs -> 3 (batch norm) -> 2: 3 + 6 + 9 and 2 + 6 floats.
    fn small_net() -> Network {
        let text = "[net]\nbatch=1\nwidth=2\nheight=1\nchannels=1\n[connected]\noutput=3\nbatch_normalize=1\nactivation=relu\n[connected]\noutput=2\nactivation=linear\n[softmax]\n";
        let cfg = NetworkConfig::parse(text, Path::new("small.cfg")).unwrap();
        Network::build(&cfg, 1, 1).unwrap()
    }

    fn decode(net: &mut Network, bytes: &[u8]) -> Result<WeightsHeader> {
        decode_weights(net, bytes, Path::new("x.weights"), Path::new("small.cfg"))
    }

    #[test]
    fn round_trip_keeps_values_and_seen() {
        let mut net = small_net();
        net.seen = 12345;
        let mut bytes = Vec::new();
        encode_weights(&net, &mut bytes).unwrap();
        assert_eq!(bytes.len(), 20 + 4 * (18 + 8));
        let mut other = small_net();
        for layer in other.layers.iter_mut() {
            if let Some(p) = layer.params_mut() {
                p.weights.fill(0.5);
            }
        }
        let header = decode(&mut other, &bytes).unwrap();
        assert_eq!(header.seen, 12345);
        assert_eq!(other.seen, 12345);
        let first = |n: &Network| n.layers[0].params().unwrap().weights.clone();
        assert_eq!(first(&other), first(&net));
    }

    #[test]
    fn huge_version_numbers_are_an_error() {
        // major * 10 + minor overflowed i32 here before the sum moved to i64.
        let mut bytes = Vec::new();
        for v in [i32::MAX, i32::MAX, 0, 0, 0] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let err = decode(&mut small_net(), &bytes).unwrap_err().to_string();
        assert!(err.contains("expected"), "{err}");
    }

    #[test]
    fn header_cut_inside_seen_is_an_error() {
        let bytes = [0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6];
        let err = decode(&mut small_net(), &bytes).unwrap_err().to_string();
        assert!(err.contains("ends inside its header"), "{err}");
    }

    #[test]
    fn old_header_with_u32_seen_loads() {
        let mut bytes = Vec::new();
        for v in [0i32, 1, 0, 77] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        bytes.extend(std::iter::repeat_n(0u8, 4 * 26));
        let mut net = small_net();
        assert_eq!(decode(&mut net, &bytes).unwrap().seen, 77);
    }

    #[test]
    fn failed_decode_leaves_network_unchanged() {
        let mut net = small_net();
        let before = net.layers[0].params().unwrap().weights.clone();
        let mut bytes = Vec::new();
        encode_weights(&small_net(), &mut bytes).unwrap();
        let last = bytes.len() - 4;
        bytes[last..].copy_from_slice(&f32::INFINITY.to_le_bytes());
        assert!(decode(&mut net, &bytes).is_err());
        assert_eq!(net.layers[0].params().unwrap().weights, before);
        assert_eq!(net.seen, 0);
    }

    #[test]
    fn negative_rolling_variance_is_an_error() {
        let mut bytes = Vec::new();
        encode_weights(&small_net(), &mut bytes).unwrap();
        // Layer 0 stores biases (3), weights (6), scales (3), rolling mean (3),
        // then the rolling variance: output 1's is float 16 after the header.
        let at = 20 + 4 * 16;
        bytes[at..at + 4].copy_from_slice(&(-0.5f32).to_le_bytes());
        let err = decode(&mut small_net(), &bytes).unwrap_err().to_string();
        assert!(err.contains("layer 0 ([connected]) has rolling variance -0.5 for output 1"), "{err}");
    }
}
