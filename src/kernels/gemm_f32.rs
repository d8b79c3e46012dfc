//! The one call into the FP32 GEMM crate (`matrixmultiply`, threaded over the
//! cores it detects; `MATMUL_NUM_THREADS` overrides the count).

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
    /// A dense row-major `rows x cols` matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert!(data.len() >= rows * cols, "matrix buffer too small");
        MatRef { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// The transpose, without copying.
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

/// Computes `C <- alpha * A B + beta * C` for a dense row-major `C` of
/// `a.rows x b.cols`. With `beta == 0` the old contents of `C` are ignored.
pub fn gemm(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: &mut [f32]) {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(c.len() >= m * n, "output buffer too small");
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the asserts above and the strides of each view keep every index
    // that sgemm computes inside its slice; C is a distinct &mut slice.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            a.row_stride as isize,
            a.col_stride as isize,
            b.data.as_ptr(),
            b.row_stride as isize,
            b.col_stride as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
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
        let mut c = [0.0; 4];
        gemm(1.0, MatRef::new(&a, 2, 3), MatRef::new(&b, 3, 2), 0.0, &mut c);
        assert_eq!(c, [4.0, 5.0, 10.0, 11.0]);

        // A^T A is 3x3; check one entry and accumulation with beta = 1.
        let mut d = [1.0; 9];
        gemm(1.0, MatRef::new(&a, 2, 3).t(), MatRef::new(&a, 2, 3), 1.0, &mut d);
        assert_eq!(d[0], 1.0 + 1.0 + 16.0);
        assert_eq!(d[5], 1.0 + 2.0 * 3.0 + 5.0 * 6.0);
    }
}
