//! Benchmarks of the int8 GEMM kernels on the layers of the 2352-1024-512-256-10
//! network: each layer alone, then the whole 4-layer forward pass.
//!
//! Every kernel the CPU supports runs in the same process, on one thread
//! unless the name ends in `threads`. The `layer` group's throughput counts
//! multiply-adds (`rows * k * outputs`), the `forward` group's counts images.
//!
//! Run: `cargo bench --bench gemm_i8 -- --warm-up-time 1 --measurement-time 3`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use darknet::kernels::gemm_i8::{gemm_requantize_with, Kernel, PackedWeights, Requantization};
use darknet::quant::fixed_point::quantize_multiplier;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::hint::black_box;

/// `(k, outputs)` of the four connected layers.
const LAYERS: [(usize, usize); 4] = [(2352, 1024), (1024, 512), (512, 256), (256, 10)];
const BATCHES: [usize; 2] = [1, 128];

struct Layer {
    weights: PackedWeights,
    rq: Requantization,
}

impl Layer {
    /// Builds a layer with random weights and biases and a multiplier of
    /// about 2^-10, a typical `S1 * S2 / S3`.
    fn random(rng: &mut StdRng, k: usize, outputs: usize) -> Layer {
        let weights: Vec<i8> = (0..outputs * k).map(|_| rng.gen()).collect();
        let weights = PackedWeights::new(&weights, outputs, k);
        let biases: Vec<i32> = (0..outputs).map(|_| rng.gen_range(-50_000..=50_000)).collect();
        let multiplier = quantize_multiplier(rng.gen_range(0.0005..0.002));
        let (rq, _) = Requantization::new(
            &weights,
            &biases,
            rng.gen_range(-128..=-100),
            rng.gen_range(-10..=10),
            multiplier,
            -128,
        );
        Layer { weights, rq }
    }
}

fn supported_kernels() -> Vec<Kernel> {
    Kernel::ALL
        .into_iter()
        .filter(|&kernel| {
            if !kernel.is_supported() {
                eprintln!("skipping the {} kernel: this CPU does not support it", kernel.name());
            }
            kernel.is_supported()
        })
        .collect()
}

fn random_input(rng: &mut StdRng, len: usize) -> Vec<i8> {
    (0..len).map(|_| rng.gen()).collect()
}

fn bench_layers(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(1);
    let mut group = c.benchmark_group("layer");
    for (k, outputs) in LAYERS {
        let layer = Layer::random(&mut rng, k, outputs);
        for rows in BATCHES {
            let input = random_input(&mut rng, rows * k);
            let mut output = vec![0i8; rows * outputs];
            // Few samples for the long runs keep the scalar kernel's time modest.
            group.sample_size(if rows * k * outputs > 10_000_000 { 10 } else { 50 });
            group.throughput(Throughput::Elements((rows * k * outputs) as u64));
            for kernel in supported_kernels() {
                let id = BenchmarkId::new(format!("{k}x{outputs}/batch{rows}"), kernel.name());
                group.bench_function(id, |b| {
                    b.iter(|| {
                        gemm_requantize_with(
                            kernel,
                            1,
                            black_box(&input),
                            rows,
                            &layer.weights,
                            &layer.rq,
                            &mut output,
                        );
                        black_box(&output);
                    })
                });
            }
        }
    }
    group.finish();
}

/// Runs the four layers on `rows` images, ping-ponging between two buffers.
fn forward(
    kernel: Kernel,
    threads: usize,
    layers: &[Layer],
    input: &[i8],
    rows: usize,
    buffers: &mut [Vec<i8>; 2],
) -> i8 {
    let [a, b] = buffers;
    a[..input.len()].copy_from_slice(input);
    for layer in layers {
        let (k, n) = (layer.weights.k, layer.weights.outputs);
        gemm_requantize_with(kernel, threads, &a[..rows * k], rows, &layer.weights, &layer.rq, &mut b[..rows * n]);
        std::mem::swap(a, b);
    }
    a[0]
}

fn bench_forward(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(2);
    let layers: Vec<Layer> = LAYERS.iter().map(|&(k, outputs)| Layer::random(&mut rng, k, outputs)).collect();
    let mut group = c.benchmark_group("forward");
    for rows in BATCHES {
        let input = random_input(&mut rng, rows * LAYERS[0].0);
        let mut buffers = [vec![0i8; rows * LAYERS[0].0], vec![0i8; rows * LAYERS[0].0]];
        group.sample_size(if rows > 1 { 10 } else { 50 });
        group.throughput(Throughput::Elements(rows as u64));
        for kernel in supported_kernels() {
            let mut runs = vec![(kernel.name().to_string(), 1)];
            let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            if rows > 1 && cores > 1 && kernel != Kernel::Scalar {
                runs.push((format!("{}_{cores}threads", kernel.name()), cores));
            }
            for (name, threads) in runs {
                group.bench_function(BenchmarkId::new(format!("batch{rows}"), name), |b| {
                    b.iter(|| forward(kernel, threads, &layers, black_box(&input), rows, &mut buffers))
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench_forward, bench_layers);
criterion_main!(benches);
