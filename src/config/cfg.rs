//! The typed network description of a `.cfg` file: [`NetOptions`] from
//! `[net]`/`[network]` and one [`LayerSpec`] per layer section.

use super::ini::{self, parse_sections, Reader, Section};
use crate::network::activation::Activation;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// Learning-rate policy, with the keys each one reads (Darknet's `get_current_rate`).
#[derive(Debug, Clone, PartialEq)]
pub enum Policy {
    Constant,
    Step { step: usize, scale: f32 },
    Steps { steps: Vec<usize>, scales: Vec<f32> },
    Exp { gamma: f32 },
    Poly { power: f32 },
    Sig { gamma: f32, step: usize },
    Random { power: f32 },
}

/// Options of the `[net]` section.
#[derive(Debug, Clone)]
pub struct NetOptions {
    pub batch: usize,
    pub subdivisions: usize,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub inputs: usize,
    pub max_crop: usize,
    pub min_crop: usize,
    pub angle: f32,
    pub aspect: f32,
    pub hue: f32,
    pub saturation: f32,
    pub exposure: f32,
    pub max_batches: usize,
    pub learning_rate: f32,
    pub momentum: f32,
    pub decay: f32,
    pub policy: Policy,
    pub burn_in: usize,
    pub power: f32,
    pub qat_init_step: usize,
    pub qat_end_epoch: usize,
    pub ema_smooth: f32,
    pub ema_decay: bool,
    pub ema_convergence: f32,
}

impl NetOptions {
    /// Images in one forward/backward pass (`batch / subdivisions`).
    pub fn mini_batch(&self) -> usize {
        self.batch / self.subdivisions
    }
}

/// A layer section of the cfg.
#[derive(Debug, Clone, PartialEq)]
pub enum LayerSpec {
    Connected { output: usize, activation: Activation, batch_normalize: bool },
    Convolutional {
        filters: usize,
        size: usize,
        stride: usize,
        pad: usize,
        activation: Activation,
        batch_normalize: bool,
    },
    /// `padding` is the total padding of both sides (Darknet's default `size - 1`).
    MaxPool { size: usize, stride: usize, padding: usize },
    AvgPool,
    Softmax { groups: usize, temperature: f32 },
    Dropout { probability: f32 },
    Cost { scale: f32 },
}

impl LayerSpec {
    /// True for layers stored in `.weights`, `.qweights` and `.qparams`.
    pub fn has_parameters(&self) -> bool {
        matches!(self, LayerSpec::Connected { .. } | LayerSpec::Convolutional { .. })
    }
}

/// A layer spec with where it came from.
#[derive(Debug, Clone)]
pub struct LayerEntry {
    pub spec: LayerSpec,
    pub section: String,
    pub line: usize,
}

/// A parsed `.cfg` file.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    pub path: PathBuf,
    pub net: NetOptions,
    pub layers: Vec<LayerEntry>,
    /// Warnings about unused keys, printed by the caller.
    pub warnings: Vec<String>,
}

impl NetworkConfig {
    /// Reads and parses a `.cfg` file.
    pub fn load(path: &Path) -> Result<NetworkConfig> {
        let text = ini::read_text(path, "cfg")?;
        Self::parse(&text, path)
    }

    /// Parses the text of a `.cfg` file; `path` is used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<NetworkConfig> {
        let sections = parse_sections(text, path)?;
        let Some(first) = sections.first() else {
            bail!("{}: no sections found: a cfg starts with [net] followed by layer sections", path.display());
        };
        if first.name != "net" && first.name != "network" {
            bail!(
                "{}:{}: the first section is [{}], expected [net] (or [network]) with batch, width, height and channels",
                path.display(),
                first.line,
                first.name
            );
        }
        let mut warnings = Vec::new();
        let net = parse_net(first, path)?;
        warnings.extend(ini::unused_key_warnings(path, &first.name, &first.entries));

        let mut layers = Vec::new();
        for section in &sections[1..] {
            let spec = parse_layer(section, path)?;
            warnings.extend(ini::unused_key_warnings(path, &section.name, &section.entries));
            layers.push(LayerEntry { spec, section: section.name.clone(), line: section.line });
        }
        if layers.is_empty() {
            bail!("{}: the cfg has [net] but no layers; add e.g. [connected] and [softmax]", path.display());
        }
        Ok(NetworkConfig { path: path.to_path_buf(), net, layers, warnings })
    }

    /// Returns the cfg file name without directory and extension (`cfg/mnist_fc4.cfg` -> `mnist_fc4`).
    pub fn base_name(&self) -> String {
        self.path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "network".to_string())
    }
}

fn positive(reader: &Reader, key: &str, value: usize) -> Result<usize> {
    if value == 0 {
        return Err(reader.error_at(key, &format!("'{key}' must be at least 1, found 0")));
    }
    Ok(value)
}

fn parse_net(section: &Section, path: &Path) -> Result<NetOptions> {
    let r = Reader { file: path, section: &section.name, entries: &section.entries };

    let batch = positive(&r, "batch", r.get_or("batch", 1usize)?)?;
    let subdivisions = positive(&r, "subdivisions", r.get_or("subdivisions", 1usize)?)?;
    if batch % subdivisions != 0 {
        return Err(r.error_at(
            "subdivisions",
            &format!("batch={batch} is not divisible by subdivisions={subdivisions}; pick a divisor of batch"),
        ));
    }
    let height = r.get_or("height", 0usize)?;
    let width = r.get_or("width", 0usize)?;
    let channels = r.get_or("channels", 0usize)?;
    let image_size = height.checked_mul(width).and_then(|v| v.checked_mul(channels));
    let Some(image_size) = image_size else {
        return Err(r.error_at("height", &format!("height*width*channels = {height}*{width}*{channels} is too large")));
    };
    let inputs = r.get_or("inputs", image_size)?;
    if inputs == 0 {
        return Err(r.error_at(
            "height",
            "the input size is 0: set height, width and channels (or inputs) in [net]",
        ));
    }

    let learning_rate = r.get_or("learning_rate", 0.001f32)?;
    let policy_name = r.get_str("policy").unwrap_or("constant").to_string();
    let policy = match policy_name.as_str() {
        "constant" => Policy::Constant,
        "step" => Policy::Step { step: r.get_or("step", 1usize)?, scale: r.get_or("scale", 1.0f32)? },
        "steps" => {
            let steps: Vec<usize> = r.get_list("steps")?.unwrap_or_default();
            let scales: Vec<f32> = r.get_list("scales")?.unwrap_or_default();
            if steps.is_empty() || steps.len() != scales.len() {
                return Err(r.error_at(
                    "steps",
                    &format!(
                        "policy=steps needs 'steps' and 'scales' of equal length, found {} and {}",
                        steps.len(),
                        scales.len()
                    ),
                ));
            }
            Policy::Steps { steps, scales }
        }
        "exp" => Policy::Exp { gamma: r.get_or("gamma", 1.0f32)? },
        "poly" => Policy::Poly { power: r.get_or("power", 1.0f32)? },
        "sig" => Policy::Sig { gamma: r.get_or("gamma", 1.0f32)?, step: r.get_or("step", 1usize)? },
        "random" => Policy::Random { power: r.get_or("power", 1.0f32)? },
        other => {
            return Err(r.error_at(
                "policy",
                &format!("unknown policy '{other}': use constant, step, steps, exp, poly, sig or random"),
            ))
        }
    };

    let options = NetOptions {
        batch,
        subdivisions,
        height,
        width,
        channels,
        inputs,
        max_crop: r.get_or("max_crop", width.max(height).saturating_mul(2))?,
        min_crop: r.get_or("min_crop", width.max(height))?,
        angle: r.get_or("angle", 0.0f32)?,
        aspect: r.get_or("aspect", 1.0f32)?,
        hue: r.get_or("hue", 0.0f32)?,
        saturation: r.get_or("saturation", 1.0f32)?,
        exposure: r.get_or("exposure", 1.0f32)?,
        max_batches: r.get_or("max_batches", 0usize)?,
        learning_rate,
        momentum: r.get_or("momentum", 0.9f32)?,
        decay: r.get_or("decay", 0.0001f32)?,
        policy,
        burn_in: r.get_or("burn_in", 0usize)?,
        power: r.get_or("power", 4.0f32)?,
        qat_init_step: r.get_or("qat_init_step", 1usize)?,
        qat_end_epoch: r.get_or("qat_end_epoch", 1usize)?,
        ema_smooth: r.get_or("ema_smooth", 0.95f32)?,
        ema_decay: r.get_or("ema_decay", 0u8)? != 0,
        ema_convergence: r.get_or("ema_convergence", 0.99f32)?,
    };
    if !(0.0..=1.0).contains(&options.ema_smooth) || !(0.0..=1.0).contains(&options.ema_convergence) {
        return Err(r.error_at("ema_smooth", "ema_smooth and ema_convergence must lie in [0, 1]"));
    }
    Ok(options)
}

fn parse_activation(r: &Reader, default: Activation) -> Result<Activation> {
    match r.get_str("activation") {
        None => Ok(default),
        Some(name) => Activation::from_name(name).ok_or_else(|| {
            r.error_at(
                "activation",
                &format!("unknown activation '{name}': use one of {}", Activation::NAMES.join(", ")),
            )
        }),
    }
}

fn parse_layer(section: &Section, path: &Path) -> Result<LayerSpec> {
    let r = Reader { file: path, section: &section.name, entries: &section.entries };
    let spec = match section.name.as_str() {
        "connected" | "conn" => {
            let output = r.get_or("output", 1usize)?;
            LayerSpec::Connected {
                output: positive(&r, "output", output)?,
                activation: parse_activation(&r, Activation::Logistic)?,
                batch_normalize: r.get_or("batch_normalize", 0u8)? != 0,
            }
        }
        "convolutional" | "conv" => {
            let size = positive(&r, "size", r.get_or("size", 1usize)?)?;
            // As in Darknet, `pad=1` means `size / 2` and overrides `padding`.
            let pad_flag: u8 = r.get_or("pad", 0u8)?;
            let explicit: usize = r.get_or("padding", 0usize)?;
            let padding = if pad_flag != 0 { size / 2 } else { explicit };
            LayerSpec::Convolutional {
                filters: positive(&r, "filters", r.get_or("filters", 1usize)?)?,
                size,
                stride: positive(&r, "stride", r.get_or("stride", 1usize)?)?,
                pad: padding,
                activation: parse_activation(&r, Activation::Logistic)?,
                batch_normalize: r.get_or("batch_normalize", 0u8)? != 0,
            }
        }
        "maxpool" | "max" => {
            let stride = positive(&r, "stride", r.get_or("stride", 1usize)?)?;
            let size = positive(&r, "size", r.get_or("size", stride)?)?;
            let padding = r.get_or("padding", size - 1)?;
            LayerSpec::MaxPool { size, stride, padding }
        }
        "avgpool" | "avg" => LayerSpec::AvgPool,
        "softmax" | "soft" => {
            let groups = positive(&r, "groups", r.get_or("groups", 1usize)?)?;
            let temperature = r.get_or("temperature", 1.0f32)?;
            if temperature <= 0.0 {
                return Err(r.error_at("temperature", "temperature must be positive"));
            }
            LayerSpec::Softmax { groups, temperature }
        }
        "dropout" => {
            let probability = r.get_or("probability", 0.5f32)?;
            if !(0.0..1.0).contains(&probability) {
                return Err(r.error_at(
                    "probability",
                    &format!("dropout probability must lie in [0, 1), found {probability}"),
                ));
            }
            LayerSpec::Dropout { probability }
        }
        "cost" => {
            if let Some(kind) = r.get_str("type") {
                if kind != "sse" {
                    return Err(r.error_at("type", &format!("cost type '{kind}' is not supported; use sse")));
                }
            }
            LayerSpec::Cost { scale: r.get_or("scale", 1.0f32)? }
        }
        "net" | "network" => bail!(
            "{}:{}: a second [{}] section; a cfg has one [net] at the top",
            path.display(),
            section.line,
            section.name
        ),
        other => bail!(
            "{}:{}: unknown section [{}]; supported: [connected], [convolutional], [maxpool], [avgpool], [softmax], [dropout], [cost]",
            path.display(),
            section.line,
            other
        ),
    };
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKSHOP: &str = "[net]\nbatch=128\nsubdivisions=1\nheight=28\nwidth=28\nchannels=3\nmax_crop=28\nmin_crop=28\n\nhue=.1\nsaturation=.75\nexposure=.75\nmax_batches=1406 # 3 epoch\npolicy=constant\nlearning_rate=0.01    # FP\nmomentum=0.9\ndecay=0.0\nqat_init_step=1\nqat_end_epoch=1\nema_smooth=0.999\nema_decay=0\nema_convergence=0.999\n\n[connected]\noutput=1024\nactivation=relu\n\n[connected]\noutput=10\nactivation=linear\n\n[softmax]\n";

    fn parse(text: &str) -> Result<NetworkConfig> {
        NetworkConfig::parse(text, Path::new("cfg/test.cfg"))
    }

    #[test]
    fn workshop_cfg_parses() {
        let cfg = parse(WORKSHOP).unwrap();
        assert_eq!(cfg.net.batch, 128);
        assert_eq!(cfg.net.inputs, 28 * 28 * 3);
        assert_eq!(cfg.net.max_batches, 1406);
        assert_eq!(cfg.net.learning_rate, 0.01);
        assert_eq!(cfg.net.ema_smooth, 0.999);
        assert!(!cfg.net.ema_decay);
        assert_eq!(cfg.layers.len(), 3);
        assert_eq!(
            cfg.layers[0].spec,
            LayerSpec::Connected { output: 1024, activation: Activation::Relu, batch_normalize: false }
        );
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
        assert_eq!(cfg.base_name(), "test");
    }

    #[test]
    fn crlf_and_network_alias() {
        let text = WORKSHOP.replace("[net]", "[network]").replace('\n', "\r\n");
        let cfg = parse(&text).unwrap();
        assert_eq!(cfg.net.batch, 128);
        assert_eq!(cfg.layers.len(), 3);
    }

    #[test]
    fn unknown_key_warns_with_line() {
        let text = "[net]\nbatch=2\nwidth=2\nheight=2\nchannels=1\nbogus=3\n[softmax]\n";
        let cfg = parse(text).unwrap();
        assert_eq!(cfg.warnings.len(), 1);
        assert!(cfg.warnings[0].contains("cfg/test.cfg:6"), "{}", cfg.warnings[0]);
        assert!(cfg.warnings[0].contains("bogus"));
    }

    #[test]
    fn unknown_section_is_error_with_line() {
        let text = "[net]\nbatch=2\nwidth=2\nheight=2\nchannels=1\n[yolo]\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("cfg/test.cfg:6"), "{err}");
        assert!(err.contains("[yolo]"), "{err}");
    }

    #[test]
    fn non_numeric_value_is_error() {
        let text = "[net]\nbatch=two\nwidth=2\nheight=2\nchannels=1\n[softmax]\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("cfg/test.cfg:2"), "{err}");
        assert!(err.contains("two"), "{err}");
    }

    #[test]
    fn missing_net_is_error() {
        let err = parse("[connected]\noutput=2\n").unwrap_err().to_string();
        assert!(err.contains("expected [net]"), "{err}");
    }

    #[test]
    fn batch_zero_is_error() {
        let text = "[net]\nbatch=0\nwidth=2\nheight=2\nchannels=1\n[softmax]\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("batch"), "{err}");
        assert!(err.contains(":2"), "{err}");
    }

    #[test]
    fn overflowing_sizes_are_errors() {
        // height*width*channels and the max_crop default overflowed here.
        let text = "[net]\nbatch=1\nheight=99999999999\nwidth=99999999999\nchannels=1\n[softmax]\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("too large"), "{err}");
        let text = format!("[net]\nbatch=1\nheight={}\nwidth=1\nchannels=0\ninputs=4\n[softmax]\n", usize::MAX);
        let cfg = parse(&text).unwrap();
        assert_eq!(cfg.net.max_crop, usize::MAX);
    }

    #[test]
    fn non_finite_float_is_error() {
        for value in ["nan", "inf", "-inf", "1e39"] {
            let text = format!("[net]\nbatch=1\nwidth=1\nheight=1\nchannels=1\nmomentum={value}\n[softmax]\n");
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(":6"), "{err}");
            assert!(err.contains("a finite number"), "{err}");
        }
    }

    #[test]
    fn unknown_activation_is_error() {
        let text = "[net]\nbatch=2\nwidth=2\nheight=2\nchannels=1\n[connected]\noutput=2\nactivation=swishy\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(":8"), "{err}");
        assert!(err.contains("swishy"), "{err}");
    }

    #[test]
    fn conv_pad_flag_overrides_padding() {
        let text = "[net]\nbatch=2\nwidth=8\nheight=8\nchannels=1\n[convolutional]\nfilters=2\nsize=5\npad=1\npadding=7\n[maxpool]\nsize=3\nstride=2\n[maxpool]\nsize=2\nstride=2\npadding=0\n";
        let cfg = parse(text).unwrap();
        assert!(matches!(cfg.layers[0].spec, LayerSpec::Convolutional { pad: 2, .. }));
        assert_eq!(cfg.layers[1].spec, LayerSpec::MaxPool { size: 3, stride: 2, padding: 2 });
        assert_eq!(cfg.layers[2].spec, LayerSpec::MaxPool { size: 2, stride: 2, padding: 0 });
    }

    #[test]
    fn steps_policy_reads_lists() {
        let text = "[net]\nbatch=2\nwidth=2\nheight=2\nchannels=1\npolicy=steps\nsteps=10,20\nscales=.1,.1\n[softmax]\n";
        let cfg = parse(text).unwrap();
        assert_eq!(cfg.net.policy, Policy::Steps { steps: vec![10, 20], scales: vec![0.1, 0.1] });
    }
}
