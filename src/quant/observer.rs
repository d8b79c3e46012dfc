//! EMA of a tensor's min/max range during QAT.

use super::affine::{min_max, QuantParams};

/// The tracked range of one tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RangeObserver {
    pub min: f32,
    pub max: f32,
    /// True for ReLU-like outputs, whose min stays 0.
    pub non_negative: bool,
    pub initialized: bool,
}

/// Moves a range one EMA step (workshop exercise `ema_cpu`):
/// `min = min*s + batch_min*(1-s)`, the same for max.
pub fn ema_update(min: f32, max: f32, batch_min: f32, batch_max: f32, smooth: f32) -> (f32, f32) {
    (min * smooth + batch_min * (1.0 - smooth), max * smooth + batch_max * (1.0 - smooth))
}

/// Returns the EMA factor at QAT step `step` of `total`: fixed at `ema_smooth`, or
/// with `ema_decay` growing linearly to `ema_convergence` at the last step.
pub fn smoothing_at(ema_smooth: f32, ema_convergence: f32, ema_decay: bool, step: usize, total: usize) -> f32 {
    if !ema_decay || total <= 1 {
        return ema_smooth;
    }
    let t = (step.min(total - 1)) as f32 / (total - 1) as f32;
    ema_smooth + (ema_convergence - ema_smooth) * t
}

impl RangeObserver {
    pub fn new(non_negative: bool) -> Self {
        RangeObserver { min: 0.0, max: 0.0, non_negative, initialized: false }
    }

    /// Sets the range from `values` on the first call, then moves it by EMA.
    pub fn observe(&mut self, values: &[f32], smooth: f32) {
        let (mut batch_min, batch_max) = min_max(values);
        if self.non_negative {
            batch_min = 0.0;
        }
        if !self.initialized {
            self.min = batch_min;
            self.max = batch_max;
            self.initialized = true;
        } else {
            (self.min, self.max) = ema_update(self.min, self.max, batch_min, batch_max, smooth);
        }
        if self.non_negative {
            self.min = 0.0;
        }
    }

    pub fn params(&self) -> QuantParams {
        QuantParams::from_range(self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ema_by_hand() {
        let (lo, hi) = ema_update(-1.0, 2.0, -3.0, 4.0, 0.75);
        assert_eq!(lo, -1.5); // -0.75 - 0.75
        assert_eq!(hi, 2.5); // 1.5 + 1.0
    }

    #[test]
    fn relu_observer_keeps_min_zero() {
        let mut o = RangeObserver::new(true);
        o.observe(&[0.5, 2.0, 1.0], 0.9);
        assert_eq!((o.min, o.max), (0.0, 2.0));
        o.observe(&[0.0, 4.0], 0.9);
        assert_eq!(o.min, 0.0);
        assert!((o.max - 2.2).abs() < 1e-6);
    }

    #[test]
    fn first_observation_sets_range() {
        let mut o = RangeObserver::new(false);
        o.observe(&[-0.5, 3.0], 0.99);
        assert_eq!((o.min, o.max), (-0.5, 3.0));
    }

    #[test]
    fn smoothing_schedule() {
        assert_eq!(smoothing_at(0.9, 0.99, false, 5, 10), 0.9);
        assert_eq!(smoothing_at(0.9, 0.99, true, 0, 11), 0.9);
        assert!((smoothing_at(0.9, 0.99, true, 5, 11) - 0.945).abs() < 1e-6);
        assert!((smoothing_at(0.9, 0.99, true, 10, 11) - 0.99).abs() < 1e-6);
    }
}
