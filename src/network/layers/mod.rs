//! One module per layer kind, each with the same verbs: forward, backward,
//! update. Buffers are batch-major: row `b` of `output` contains image `b`'s
//! `outputs()` values, channel-major (CHW) where the layer has a spatial shape.
//!
//! Deltas follow Darknet's sign: `delta = -dLoss/d(output)`, summed over the
//! batch, so an update adds `rate / batch * delta`.

pub mod avgpool;
pub mod batch_norm;
pub mod connected;
pub mod convolutional;
pub mod cost;
pub mod dropout;
pub mod maxpool;
pub mod params;
pub mod softmax;

pub use params::{BatchNorm, ParamLayout, Params};

use crate::network::activation::Activation;
use rand::rngs::StdRng;

/// The shape of one image's activations: channels, height, width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Shape {
    pub fn len(&self) -> usize {
        self.c * self.h * self.w
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the shape of a flat vector of `n` values.
    pub fn flat(n: usize) -> Shape {
        Shape { c: n, h: 1, w: 1 }
    }
}

/// Per-pass state handed to `forward`.
pub struct ForwardContext<'a> {
    /// True in training: batch statistics, dropout masks.
    pub train: bool,
    pub rng: &'a mut StdRng,
}

/// Hyper-parameters of one SGD update (Darknet's `update_args`).
#[derive(Debug, Clone, Copy)]
pub struct UpdateArgs {
    pub learning_rate: f32,
    pub momentum: f32,
    pub decay: f32,
    /// Images whose gradients were summed since the last update.
    pub batch: usize,
}

/// A layer of the FP32 network.
pub trait Layer: Send {
    /// Returns the cfg section name, for messages.
    fn kind(&self) -> &'static str;

    fn input_shape(&self) -> Shape;

    fn output_shape(&self) -> Shape;

    fn outputs(&self) -> usize {
        self.output_shape().len()
    }

    /// Computes `output[..batch * outputs()]` from `input`. Also zeroes this
    /// layer's delta so the next backward pass can accumulate into it.
    fn forward(&mut self, input: &[f32], batch: usize, ctx: &mut ForwardContext);

    /// Propagates this layer's delta: accumulates parameter gradients and,
    /// when `input_delta` is given, adds (`+=`) the delta of its input.
    fn backward(&mut self, input: &[f32], batch: usize, input_delta: Option<&mut [f32]>);

    /// Applies one SGD step to the parameters, if any.
    fn update(&mut self, _args: &UpdateArgs) {}

    fn output(&self) -> &[f32];

    fn output_mut(&mut self) -> &mut [f32];

    fn delta_mut(&mut self) -> &mut [f32];

    /// Both buffers at once, for the backward pass of the next layer.
    fn output_and_delta(&mut self) -> (&[f32], &mut [f32]);

    /// Sets the delta from the truth and returns the summed loss, for layers
    /// that compute a cost (`[softmax]`, `[cost]`).
    fn apply_truth(&mut self, _truth: &[f32], _batch: usize) -> Option<f32> {
        None
    }

    fn params(&self) -> Option<&Params> {
        None
    }

    fn params_mut(&mut self) -> Option<&mut Params> {
        None
    }

    /// Returns the activation applied to the output, for layers that have one.
    fn activation(&self) -> Option<Activation> {
        None
    }
}

/// Allocates a zeroed buffer of `n` floats.
pub(crate) fn zeros(n: usize) -> Vec<f32> {
    vec![0.0; n]
}
