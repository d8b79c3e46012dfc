"""Time the workshop MLP's forward pass in onnxruntime, FP32 and static int8.

The model is cfg/mnist_fc4.cfg without the softmax: Gemm+Relu 2352 -> 1024,
1024 -> 512, 512 -> 256, then Gemm 256 -> 10, with random weights of the
right shapes (`[outputs][inputs]`, so each Gemm has transB=1 as Darknet's
layout needs). It runs on one thread (intra_op_num_threads=1) at batch 128
and batch 1, then quantize_static turns it into an int8 model (activations
u8, weights s8, per tensor) calibrated on random inputs in [0, 1], which
runs the same way. The figures are anchors for ./darknet's forward passes;
nothing here reads the project's weights.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

# (inputs, outputs, relu) of the four connected layers of cfg/mnist_fc4.cfg.
LAYERS = [(2352, 1024, True), (1024, 512, True), (512, 256, True), (256, 10, False)]
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
OPSET = 17


def build_model(rng):
    """Return the FP32 ONNX model with a symbolic batch dimension."""
    nodes, initializers = [], []
    current = INPUT_NAME
    for i, (inputs, outputs, relu) in enumerate(LAYERS):
        # Uniform in +-sqrt(6 / inputs), the initialization of ./darknet's connected layers.
        limit = np.sqrt(6.0 / inputs)
        weights = rng.uniform(-limit, limit, (outputs, inputs)).astype(np.float32)
        biases = rng.uniform(-0.1, 0.1, outputs).astype(np.float32)
        initializers += [numpy_helper.from_array(weights, f"w{i}"), numpy_helper.from_array(biases, f"b{i}")]

        last = i == len(LAYERS) - 1
        gemm_output = OUTPUT_NAME if last else f"gemm{i}"
        nodes.append(helper.make_node("Gemm", [current, f"w{i}", f"b{i}"], [gemm_output], transB=1))
        current = gemm_output
        if relu:
            nodes.append(helper.make_node("Relu", [gemm_output], [f"relu{i}"]))
            current = f"relu{i}"

    graph = helper.make_graph(
        nodes,
        "mnist_fc4",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", LAYERS[0][0]])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", LAYERS[-1][1]])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    return model


class RandomImages(CalibrationDataReader):
    """Calibration batches of random pixels in [0, 1], the range of ./darknet's input."""

    def __init__(self, rng, batches, batch):
        self.batches = iter(
            [{INPUT_NAME: rng.uniform(0, 1, (batch, LAYERS[0][0])).astype(np.float32)} for _ in range(batches)]
        )

    def get_next(self):
        return next(self.batches, None)


def open_session(path, optimized_path=None):
    """Open a single-threaded CPU session with every graph optimization.

    With `optimized_path`, onnxruntime also writes the graph it runs there.
    """
    options = ort.SessionOptions()
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
        # Errors only: saving an optimized graph warns that it is hardware specific.
        options.log_severity_level = 3
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def operator_names(path):
    """Return the sorted operator types of an ONNX file, comma-separated."""
    return ", ".join(sorted({node.op_type for node in onnx.load(path).graph.node}))


def time_runs(session, images, seconds_target, min_runs):
    """Return the median seconds of one run, timed over about `seconds_target` seconds."""
    feed = {INPUT_NAME: images}
    for _ in range(5):
        session.run([OUTPUT_NAME], feed)
    times = []
    deadline = time.perf_counter() + seconds_target
    while len(times) < min_runs or time.perf_counter() < deadline:
        start = time.perf_counter()
        session.run([OUTPUT_NAME], feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds of timing per model and batch (default 3)")
    parser.add_argument(
        "--format", choices=["qdq", "qoperator"], default="qdq",
        help="int8 model format: QDQ (QuantizeLinear/DequantizeLinear pairs that onnxruntime fuses) "
        "or QOperator (QGemm and friends); default qdq",
    )
    parser.add_argument("--calibration-batches", type=int, default=8, help="random batches of 128 for calibration (default 8)")
    args = parser.parse_args()

    print(f"onnxruntime {ort.__version__}, onnx {onnx.__version__}, numpy {np.__version__}, Python {sys.version.split()[0]}")
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory(prefix="onnx_mlp.") as folder:
        fp32_path = Path(folder) / "mnist_fc4.onnx"
        prepared_path = Path(folder) / "mnist_fc4.prepared.onnx"
        int8_path = Path(folder) / "mnist_fc4.int8.onnx"
        int8_optimized_path = Path(folder) / "mnist_fc4.int8.optimized.onnx"
        onnx.save(build_model(rng), fp32_path)
        # Shape inference and graph clean-up that quantize_static expects first.
        # ONNX's own shape inference covers this graph, so the symbolic one
        # (which needs sympy) is skipped.
        quant_pre_process(fp32_path, prepared_path, skip_symbolic_shape=True)
        quantize_static(
            str(prepared_path),
            str(int8_path),
            RandomImages(rng, args.calibration_batches, 128),
            quant_format=QuantFormat.QDQ if args.format == "qdq" else QuantFormat.QOperator,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=False,
        )
        sessions = {"fp32": open_session(fp32_path), "int8": open_session(int8_path, int8_optimized_path)}
        print(f"int8 model ({args.format}): operators {operator_names(int8_path)}; "
              f"after onnxruntime's optimization {operator_names(int8_optimized_path)}")
        check = rng.uniform(0, 1, (128, LAYERS[0][0])).astype(np.float32)
        fp32_logits = sessions["fp32"].run([OUTPUT_NAME], {INPUT_NAME: check})[0]
        int8_logits = sessions["int8"].run([OUTPUT_NAME], {INPUT_NAME: check})[0]
        agreement = np.mean(fp32_logits.argmax(1) == int8_logits.argmax(1))
        print(f"int8 vs fp32 on 128 random images: top-1 agreement {agreement:.3f}, "
              f"max |logit difference| {np.abs(fp32_logits - int8_logits).max():.4f}")

        for precision, session in sessions.items():
            for batch in (128, 1):
                images = rng.uniform(0, 1, (batch, LAYERS[0][0])).astype(np.float32)
                seconds = time_runs(session, images, args.seconds, min_runs=20)
                print(
                    f"ANCHOR onnx_{precision} batch={batch} threads=1 "
                    f"img_s={batch / seconds:.1f} latency_us={seconds * 1e6:.1f}"
                )


if __name__ == "__main__":
    main()
