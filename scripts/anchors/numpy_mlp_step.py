"""Time the GEMMs of one FP32 training step of the workshop MLP with numpy.

The network is cfg/mnist_fc4.cfg: 2352 -> 1024 -> 512 -> 256 -> 10, connected
layers with weights stored `[outputs][inputs]` as Darknet stores them. One
step at batch B runs 11 GEMMs:

- forward, per layer:            Y  = X @ W.T   (B x in) x (in x out)
- weight gradient, per layer:    dW = dY.T @ X  (out x B) x (B x in)
- input gradient, layers 2 to 4: dX = dY @ W    (B x out) x (out x in)

Layer 1 needs no input gradient because its input is the image. Biases,
activations, the softmax, the weight update and data loading are left out, so
`batch / step seconds` is an upper bound on the training images/s that a
framework using this BLAS could reach on this machine. It is an anchor for
./darknet train_randseq, not a model of it.

The BLAS thread count is set with threadpoolctl, which also reports the
library, its version and the kernel ("architecture") that OpenBLAS chose.
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

# (inputs, outputs) of the four connected layers of cfg/mnist_fc4.cfg.
LAYERS = [(2352, 1024), (1024, 512), (512, 256), (256, 10)]


def step_flops(batch):
    """Return the floating-point operations of the 11 GEMMs (2 per multiply-add)."""
    forward = sum(2 * batch * k * n for k, n in LAYERS)
    weight_gradients = forward
    input_gradients = sum(2 * batch * k * n for k, n in LAYERS[1:])
    return forward + weight_gradients + input_gradients


class Step:
    """Buffers of one training step, allocated once so the loop times only the GEMMs."""

    def __init__(self, batch, rng):
        self.weights = [rng.uniform(-1, 1, (n, k)).astype(np.float32) for k, n in LAYERS]
        # activations[i] is the input of layer i, `[batch][inputs]`.
        self.activations = [rng.uniform(0, 1, (batch, LAYERS[0][0])).astype(np.float32)]
        self.activations += [np.empty((batch, n), np.float32) for _, n in LAYERS]
        # deltas[i] is the gradient at the output of layer i, `[batch][outputs]`.
        self.deltas = [rng.standard_normal((batch, n)).astype(np.float32) for _, n in LAYERS]
        self.weight_gradients = [np.empty((n, k), np.float32) for k, n in LAYERS]
        self.input_gradients = [np.empty((batch, k), np.float32) for k, _ in LAYERS]

    def run(self):
        """Run the 11 GEMMs, each writing (not accumulating) into its own buffer."""
        for i, weights in enumerate(self.weights):
            np.matmul(self.activations[i], weights.T, out=self.activations[i + 1])
        for i in reversed(range(len(LAYERS))):
            np.matmul(self.deltas[i].T, self.activations[i], out=self.weight_gradients[i])
            if i > 0:
                np.matmul(self.deltas[i], self.weights[i], out=self.input_gradients[i])


def time_steps(step, repeats, warmup):
    """Return the median seconds of `repeats` steps after `warmup` untimed ones."""
    for _ in range(warmup):
        step.run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step.run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def describe_blas():
    """Print each BLAS that numpy loaded, with the kernel OpenBLAS picked."""
    blas = [pool for pool in threadpool_info() if pool.get("user_api") == "blas"]
    if not blas:
        print("BLAS: threadpoolctl found no BLAS loaded in this process", file=sys.stderr)
        return
    for pool in blas:
        print(
            f"BLAS: {pool.get('internal_api')} {pool.get('version')}, "
            f"kernel {pool.get('architecture', 'n/a')}, max {pool.get('num_threads')} threads, "
            f"{pool.get('filepath')}"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128, help="images per step (default 128)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="BLAS thread counts to run (default 1 2)")
    parser.add_argument("--repeats", type=int, default=60, help="timed steps per thread count (default 60)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before timing (default 5)")
    args = parser.parse_args()

    print(f"numpy {np.__version__}, Python {sys.version.split()[0]}")
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        print(f"{name}={os.environ.get(name, '(unset)')}")
    describe_blas()

    flops = step_flops(args.batch)
    print(f"one step at batch {args.batch}: 11 GEMMs, {flops / 1e9:.3f} GFLOP")
    step = Step(args.batch, np.random.default_rng(1))
    for threads in args.threads:
        with threadpool_limits(limits=threads, user_api="blas"):
            seconds = time_steps(step, args.repeats, args.warmup)
        print(
            f"ANCHOR numpy_step threads={threads} ms={seconds * 1e3:.3f} "
            f"gflops={flops / seconds / 1e9:.1f} img_s={args.batch / seconds:.1f}"
        )


if __name__ == "__main__":
    main()
