//! FP32 figures of the workshop MLP (2352-1024-512-256-10): the twelve GEMM
//! shapes of one training step at batch 128 in the layouts the layers use,
//! the four forward shapes at batch 1, one whole training step (forward,
//! backward, SGD update) and one FP32 forward pass at batch 128.
//!
//! `cargo bench --bench train_step`; `RAYON_NUM_THREADS=1` for one thread.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use darknet::config::cfg::NetworkConfig;
use darknet::kernels::gemm_f32::{gemm, MatRef};
use darknet::network::Network;
use std::hint::black_box;
use std::path::Path;

const LAYERS: [(usize, usize); 4] = [(2352, 1024), (1024, 512), (512, 256), (256, 10)];

fn values(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919 % 1000) as f32 / 1000.0) - 0.5).collect()
}

fn gemm_shapes(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm_f32");
    for batch in [1usize, 128] {
        for &(k, n) in &LAYERS {
            let x = values(batch * k);
            let w = values(n * k);
            let mut y = vec![0.0f32; batch * n];
            group.throughput(Throughput::Elements((2 * batch * k * n) as u64));
            // Forward: y[batch][n] = x[batch][k] · Wᵀ
            group.bench_function(BenchmarkId::new(format!("forward_b{batch}"), format!("{k}x{n}")), |b| {
                b.iter(|| gemm(1.0, MatRef::new(&x, batch, k), MatRef::new(&w, n, k).t(), 0.0, black_box(&mut y)))
            });
            if batch == 1 {
                continue;
            }
            let delta = values(batch * n);
            let mut dw = vec![0.0f32; n * k];
            // Weight gradient: dW[n][k] += deltaᵀ · x
            group.bench_function(BenchmarkId::new("weight_grad_b128", format!("{k}x{n}")), |b| {
                b.iter(|| gemm(1.0, MatRef::new(&delta, batch, n).t(), MatRef::new(&x, batch, k), 1.0, black_box(&mut dw)))
            });
            let mut dx = vec![0.0f32; batch * k];
            // Input gradient: dx[batch][k] += delta · W
            group.bench_function(BenchmarkId::new("input_grad_b128", format!("{k}x{n}")), |b| {
                b.iter(|| gemm(1.0, MatRef::new(&delta, batch, n), MatRef::new(&w, n, k), 1.0, black_box(&mut dx)))
            });
        }
    }
    group.finish();
}

fn workshop_network(batch: usize) -> Network {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("cfg/mnist_fc4.cfg");
    let cfg = NetworkConfig::load(&path).expect("cfg/mnist_fc4.cfg parses");
    Network::build(&cfg, batch, 1).expect("network builds")
}

fn training_step(c: &mut Criterion) {
    let batch = 128;
    let mut net = workshop_network(batch);
    let input: Vec<f32> = values(batch * 2352).iter().map(|v| v + 0.5).collect();
    let mut truth = vec![0.0f32; batch * 10];
    for b in 0..batch {
        truth[b * 10 + b % 10] = 1.0;
    }
    let args = darknet::network::layers::UpdateArgs { learning_rate: 0.001, momentum: 0.9, decay: 0.0, batch };
    let mut group = c.benchmark_group("mlp_fp32");
    group.throughput(Throughput::Elements(batch as u64));
    group.bench_function("train_step_b128", |b| {
        b.iter(|| {
            net.train_pass(&input, &truth, batch, &mut |_, _, _| {});
            net.update(&args);
        })
    });
    group.bench_function("forward_b128", |b| b.iter(|| net.forward(black_box(&input), batch, false)));
    let mut single = workshop_network(1);
    group.throughput(Throughput::Elements(1));
    group.bench_function("forward_b1", |b| b.iter(|| single.forward(black_box(&input[..2352]), 1, false)));
    group.finish();
}

criterion_group!(benches, gemm_shapes, training_step);
criterion_main!(benches);
