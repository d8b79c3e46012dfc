//! The FP32 network: the cfg's layers in order, with forward, backward and
//! update over a batch of rows `[batch][inputs]`.

pub mod activation;
pub mod layers;
pub mod schedule;

use crate::config::cfg::{LayerSpec, NetOptions, NetworkConfig};
use anyhow::{bail, Context, Result};
use layers::avgpool::AvgPoolLayer;
use layers::connected::ConnectedLayer;
use layers::convolutional::ConvolutionalLayer;
use layers::cost::CostLayer;
use layers::dropout::DropoutLayer;
use layers::maxpool::MaxPoolLayer;
use layers::softmax::SoftmaxLayer;
use layers::{ForwardContext, Layer, Shape, UpdateArgs};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Called after each layer's forward pass with the layer's index.
pub type LayerHook<'a> = dyn FnMut(usize, &mut dyn Layer, usize) + 'a;

pub struct Network {
    pub options: NetOptions,
    pub layers: Vec<Box<dyn Layer>>,
    /// Rows the buffers were sized for.
    pub max_batch: usize,
    /// Images trained on, as stored in `.weights`.
    pub seen: u64,
    rng: StdRng,
}

impl Network {
    /// Builds the layers of `cfg` with buffers for `max_batch` images and
    /// weights initialized from `seed`.
    pub fn build(cfg: &NetworkConfig, max_batch: usize, seed: u64) -> Result<Network> {
        let mut rng = StdRng::seed_from_u64(seed);
        let net = &cfg.net;
        let mut shape = if net.height * net.width * net.channels == net.inputs {
            Shape { c: net.channels, h: net.height, w: net.width }
        } else {
            Shape::flat(net.inputs)
        };
        let mut layers: Vec<Box<dyn Layer>> = Vec::with_capacity(cfg.layers.len());
        for entry in &cfg.layers {
            let where_ = format!("{}:{}: [{}]", cfg.path.display(), entry.line, entry.section);
            let layer: Box<dyn Layer> = match &entry.spec {
                LayerSpec::Connected { output, activation, batch_normalize } => Box::new(ConnectedLayer::new(
                    shape,
                    *output,
                    *activation,
                    *batch_normalize,
                    max_batch,
                    &mut rng,
                )),
                LayerSpec::Softmax { groups, temperature } => {
                    if shape.len() % groups != 0 {
                        bail!("{where_}: groups={groups} does not divide the {} inputs of the layer", shape.len());
                    }
                    Box::new(SoftmaxLayer::new(shape, *groups, *temperature, max_batch))
                }
                LayerSpec::Dropout { probability } => Box::new(DropoutLayer::new(shape, *probability, max_batch)),
                LayerSpec::Cost { scale } => Box::new(CostLayer::new(shape, *scale, max_batch)),
                LayerSpec::Convolutional { filters, size, stride, pad, activation, batch_normalize } => Box::new(
                    ConvolutionalLayer::new(shape, *filters, *size, *stride, *pad, *activation, *batch_normalize, max_batch, &mut rng)
                        .with_context(|| format!("{where_}: input {}x{}x{}", shape.c, shape.h, shape.w))?,
                ),
                LayerSpec::MaxPool { size, stride, padding } => Box::new(
                    MaxPoolLayer::new(shape, *size, *stride, *padding, max_batch)
                        .with_context(|| format!("{where_}: input {}x{}x{}", shape.c, shape.h, shape.w))?,
                ),
                LayerSpec::AvgPool => Box::new(AvgPoolLayer::new(shape, max_batch)),
            };
            shape = layer.output_shape();
            layers.push(layer);
        }
        Ok(Network { options: cfg.net.clone(), layers, max_batch, seen: 0, rng })
    }

    pub fn inputs(&self) -> usize {
        self.options.inputs
    }

    /// Values per image of the last layer.
    pub fn outputs(&self) -> usize {
        self.layers.last().map(|l| l.outputs()).unwrap_or(0)
    }

    /// Runs every layer on `input[..batch * inputs]`; the result is in
    /// [`Network::output`].
    pub fn forward(&mut self, input: &[f32], batch: usize, train: bool) {
        self.forward_with_hook(input, batch, train, &mut |_, _, _| {});
    }

    /// As [`Network::forward`], calling `hook` after each layer (QAT uses it
    /// to observe and fake-quantize outputs).
    pub fn forward_with_hook(&mut self, input: &[f32], batch: usize, train: bool, hook: &mut LayerHook) {
        assert!(batch <= self.max_batch, "batch {batch} exceeds the buffers ({})", self.max_batch);
        let mut ctx = ForwardContext { train, rng: &mut self.rng };
        for i in 0..self.layers.len() {
            let (before, rest) = self.layers.split_at_mut(i);
            let layer = &mut rest[0];
            let layer_input: &[f32] = if i == 0 { input } else { before[i - 1].output() };
            layer.forward(layer_input, batch, &mut ctx);
            hook(i, layer.as_mut(), batch);
        }
    }

    /// Returns the last layer's output, `[batch][outputs]`.
    pub fn output(&self) -> &[f32] {
        self.layers.last().map(|l| l.output()).unwrap_or(&[])
    }

    /// Sets the deltas of the cost layers from `truth` and returns the summed loss.
    pub fn apply_truth(&mut self, truth: &[f32], batch: usize) -> f32 {
        let mut loss = 0.0;
        for layer in self.layers.iter_mut() {
            if let Some(l) = layer.apply_truth(truth, batch) {
                loss += l;
            }
        }
        loss
    }

    /// Back-propagates from the last layer. The first layer gets no input
    /// delta: nothing uses the gradient of the image.
    pub fn backward(&mut self, input: &[f32], batch: usize) {
        for i in (0..self.layers.len()).rev() {
            let (before, rest) = self.layers.split_at_mut(i);
            let layer = &mut rest[0];
            if i == 0 {
                layer.backward(input, batch, None);
            } else {
                let (prev_output, prev_delta) = before[i - 1].output_and_delta();
                layer.backward(prev_output, batch, Some(prev_delta));
            }
        }
    }

    /// Applies one SGD step to every layer.
    pub fn update(&mut self, args: &UpdateArgs) {
        for layer in self.layers.iter_mut() {
            layer.update(args);
        }
    }

    /// Applies [`Network::update`] only when it would leave every parameter,
    /// update and batch-norm statistic finite; otherwise changes nothing and
    /// returns false. The check reads the parameters once more on all threads,
    /// which is cheaper than copying them after every update.
    pub fn update_if_finite(&mut self, args: &UpdateArgs) -> bool {
        let finite = self
            .layers
            .iter()
            .filter_map(|l| l.params())
            .all(|p| p.sgd_update_stays_finite(args.learning_rate, args.momentum, args.decay, args.batch));
        if finite {
            self.update(args);
        }
        finite
    }

    /// One forward and backward pass over a mini-batch in training mode;
    /// returns the summed loss. Gradients accumulate until [`Network::update`].
    pub fn train_pass(&mut self, input: &[f32], truth: &[f32], batch: usize, hook: &mut LayerHook) -> f32 {
        self.forward_with_hook(input, batch, true, hook);
        let loss = self.apply_truth(truth, batch);
        self.backward(input, batch);
        loss
    }

    /// Indices of the layers with parameters, in cfg order.
    pub fn parameter_layers(&self) -> Vec<usize> {
        (0..self.layers.len()).filter(|&i| self.layers[i].params().is_some()).collect()
    }

    /// Draws from the network's own generator (dropout, `policy=random`).
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }
}

#[cfg(test)]
mod gradient_check;
