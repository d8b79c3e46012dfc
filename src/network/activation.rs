//! Darknet's activation functions by cfg name. Derivatives are written in
//! terms of the activated output `y`, as Darknet's `gradient_array` does, so
//! the backward pass needs no copy of the pre-activation values.

/// An activation as named in a cfg `activation=` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Linear,
    Relu,
    Leaky,
    Logistic,
    Tanh,
    Relu6,
    Elu,
}

impl Activation {
    pub const NAMES: [&'static str; 7] = ["linear", "relu", "leaky", "logistic", "tanh", "relu6", "elu"];

    /// Looks up a Darknet activation name.
    pub fn from_name(name: &str) -> Option<Activation> {
        Some(match name {
            "linear" => Activation::Linear,
            "relu" => Activation::Relu,
            "leaky" => Activation::Leaky,
            "logistic" => Activation::Logistic,
            "tanh" => Activation::Tanh,
            "relu6" => Activation::Relu6,
            "elu" => Activation::Elu,
            _ => return None,
        })
    }

    /// Returns the cfg name.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Linear => "linear",
            Activation::Relu => "relu",
            Activation::Leaky => "leaky",
            Activation::Logistic => "logistic",
            Activation::Tanh => "tanh",
            Activation::Relu6 => "relu6",
            Activation::Elu => "elu",
        }
    }

    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Linear => x,
            Activation::Relu => x.max(0.0),
            Activation::Leaky => {
                if x > 0.0 {
                    x
                } else {
                    0.1 * x
                }
            }
            Activation::Logistic => 1.0 / (1.0 + (-x).exp()),
            Activation::Tanh => x.tanh(),
            Activation::Relu6 => x.clamp(0.0, 6.0),
            Activation::Elu => {
                if x >= 0.0 {
                    x
                } else {
                    x.exp() - 1.0
                }
            }
        }
    }

    /// Returns the derivative at the point whose activated output is `y`.
    #[inline]
    pub fn gradient(self, y: f32) -> f32 {
        match self {
            Activation::Linear => 1.0,
            Activation::Relu => (y > 0.0) as u8 as f32,
            Activation::Leaky => {
                if y > 0.0 {
                    1.0
                } else {
                    0.1
                }
            }
            Activation::Logistic => y * (1.0 - y),
            Activation::Tanh => 1.0 - y * y,
            Activation::Relu6 => (y > 0.0 && y < 6.0) as u8 as f32,
            Activation::Elu => {
                if y >= 0.0 {
                    1.0
                } else {
                    y + 1.0
                }
            }
        }
    }

    /// Applies the activation in place.
    pub fn activate(self, values: &mut [f32]) {
        if self == Activation::Linear {
            return;
        }
        for v in values {
            *v = self.apply(*v);
        }
    }

    /// Multiplies each `delta` by the derivative at the matching `output`.
    pub fn backprop(self, output: &[f32], delta: &mut [f32]) {
        if self == Activation::Linear {
            return;
        }
        for (d, &y) in delta.iter_mut().zip(output) {
            *d *= self.gradient(y);
        }
    }

    /// True when the output is never negative, so a quantized range can start at 0.
    pub fn is_non_negative(self) -> bool {
        matches!(self, Activation::Relu | Activation::Relu6 | Activation::Logistic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in Activation::NAMES {
            assert_eq!(Activation::from_name(name).unwrap().name(), name);
        }
        assert!(Activation::from_name("swish").is_none());
    }

    #[test]
    fn gradients_match_finite_differences() {
        for act in [Activation::Leaky, Activation::Logistic, Activation::Tanh, Activation::Elu, Activation::Relu] {
            for &x in &[-1.3f32, -0.2, 0.4, 2.1] {
                let h = 1e-3f32;
                let numeric = (act.apply(x + h) - act.apply(x - h)) / (2.0 * h);
                let analytic = act.gradient(act.apply(x));
                assert!((numeric - analytic).abs() < 1e-2, "{act:?} at {x}: {numeric} vs {analytic}");
            }
        }
    }
}
