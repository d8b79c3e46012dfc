//! Learning-rate policies, as Darknet's `get_current_rate`.

use crate::config::cfg::{NetOptions, Policy};

/// Returns the learning rate for `batch_num` (batches done so far).
/// `uniform` supplies the random draw of `policy=random`.
pub fn current_rate(net: &NetOptions, batch_num: usize, uniform: impl FnOnce() -> f32) -> f32 {
    let lr = net.learning_rate;
    if batch_num < net.burn_in {
        return lr * (batch_num as f32 / net.burn_in as f32).powf(net.power);
    }
    let b = batch_num as f32;
    match &net.policy {
        Policy::Constant => lr,
        Policy::Step { step, scale } => lr * scale.powi((batch_num / step.max(&1)) as i32),
        Policy::Steps { steps, scales } => {
            let mut rate = lr;
            for (&step, &scale) in steps.iter().zip(scales) {
                if step > batch_num {
                    return rate;
                }
                rate *= scale;
            }
            rate
        }
        Policy::Exp { gamma } => lr * gamma.powf(b),
        Policy::Poly { power } => {
            let max = net.max_batches.max(1) as f32;
            lr * (1.0 - b / max).max(0.0).powf(*power)
        }
        Policy::Sig { gamma, step } => lr * (1.0 / (1.0 + (gamma * (b - *step as f32)).exp())),
        Policy::Random { power } => lr * uniform().powf(*power),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cfg::NetworkConfig;
    use std::path::Path;

    fn net(extra: &str) -> NetOptions {
        let text = format!("[net]\nbatch=1\nwidth=1\nheight=1\nchannels=1\nlearning_rate=0.1\nmax_batches=100\n{extra}\n[softmax]\n");
        NetworkConfig::parse(&text, Path::new("t.cfg")).unwrap().net
    }

    #[test]
    fn constant_and_burn_in() {
        let n = net("burn_in=10\npower=2");
        assert!((current_rate(&n, 5, || 0.0) - 0.1 * 0.25).abs() < 1e-7);
        assert_eq!(current_rate(&n, 10, || 0.0), 0.1);
    }

    #[test]
    fn step_and_steps() {
        let n = net("policy=step\nstep=10\nscale=0.5");
        assert!((current_rate(&n, 25, || 0.0) - 0.025).abs() < 1e-7);
        let n = net("policy=steps\nsteps=10,20\nscales=0.1,0.5");
        assert_eq!(current_rate(&n, 9, || 0.0), 0.1);
        assert!((current_rate(&n, 10, || 0.0) - 0.01).abs() < 1e-8);
        assert!((current_rate(&n, 20, || 0.0) - 0.005).abs() < 1e-8);
    }

    #[test]
    fn poly_exp_sig_random() {
        let n = net("policy=poly\npower=2");
        assert!((current_rate(&n, 50, || 0.0) - 0.025).abs() < 1e-7);
        let n = net("policy=exp\ngamma=0.5");
        assert!((current_rate(&n, 2, || 0.0) - 0.025).abs() < 1e-7);
        let n = net("policy=sig\ngamma=1\nstep=50");
        assert!((current_rate(&n, 50, || 0.0) - 0.05).abs() < 1e-7);
        let n = net("policy=random\npower=1");
        assert!((current_rate(&n, 3, || 0.5) - 0.05).abs() < 1e-7);
    }
}
