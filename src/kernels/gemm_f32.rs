//! The one call into the FP32 GEMM crate: `gemm` (the kernels behind faer).
//! On this project's training shapes it beat `matrixmultiply` by about 20%
//! on two cores (see docs/BENCHMARKS.md). Large products are split over
//! rayon's thread pool; `RAYON_NUM_THREADS` sets its size.

use std::sync::OnceLock;

/// Products with fewer multiply-adds than this run on the calling thread,
/// where splitting costs more than it saves.
const PARALLEL_MIN_FLOPS: usize = 1 << 20;

/// A row-major matrix view: `data[row * row_stride + col * col_stride]`.
/// A transposed view swaps the two strides.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// Views `data` as a dense row-major `rows x cols` matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert!(data.len() >= rows * cols, "matrix buffer too small");
        MatRef { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// Returns the transpose, without copying.
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }
}

fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(rayon::current_num_threads)
}

/// Computes `C <- alpha * A B + beta * C` for a dense row-major `C` of
/// `a.rows x b.cols`. With `beta == 0` the old contents of `C` are ignored.
pub fn gemm(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: &mut [f32]) {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(c.len() >= m * n, "output buffer too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for v in c[..m * n].iter_mut() {
            *v *= beta;
        }
        return;
    }
    let parallelism = if m * n * k >= PARALLEL_MIN_FLOPS && threads() > 1 {
        gemm::Parallelism::Rayon(threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above and the strides of each view keep every index
    // that the kernel computes inside its slice; C is a distinct &mut slice.
    // `gemm` computes dst = alpha_dst * dst + beta_src * lhs * rhs, and reads
    // dst only when `read_dst` is true.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            beta != 0.0,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            beta,
            alpha,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_product_and_transpose() {
        // A = [[1,2,3],[4,5,6]], B = [[1,0],[0,1],[1,1]]
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let mut c = [7.0; 4];
        gemm(1.0, MatRef::new(&a, 2, 3), MatRef::new(&b, 3, 2), 0.0, &mut c);
        assert_eq!(c, [4.0, 5.0, 10.0, 11.0]);

        // A^T A is 3x3; check two entries and accumulation with beta = 1.
        let mut d = [1.0; 9];
        gemm(1.0, MatRef::new(&a, 2, 3).t(), MatRef::new(&a, 2, 3), 1.0, &mut d);
        assert_eq!(d[0], 1.0 + 1.0 + 16.0);
        assert_eq!(d[5], 1.0 + 2.0 * 3.0 + 5.0 * 6.0);
    }

    #[test]
    fn large_product_matches_naive() {
        let (m, k, n) = (67, 129, 93);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0).collect();
        let mut c = vec![0.5f32; m * n];
        let before = c.clone();
        gemm(2.0, MatRef::new(&a, m, k), MatRef::new(&b, n, k).t(), 1.0, &mut c);
        for i in 0..m {
            for j in 0..n {
                let dot: f32 = (0..k).map(|x| a[i * k + x] * b[j * k + x]).sum();
                let expected = before[i * n + j] + 2.0 * dot;
                assert!((c[i * n + j] - expected).abs() < 1e-3, "({i},{j}): {} vs {expected}", c[i * n + j]);
            }
        }
    }
}
