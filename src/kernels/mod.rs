//! Matrix kernels: the FP32 GEMM call and the int8 GEMM with its requantization.

pub mod gemm_f32;
pub mod gemm_i8;
pub mod im2col;
