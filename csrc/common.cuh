// Shared helpers of the torch-free CUDA extension (kernels.md §6): launch-error checks that name the kernel,
// the dtype codes the Python wrappers pass, and stream handles taken as integers.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include <cuda_runtime.h>

namespace dip {

// dtype codes shared with dip_kernels/cuda_ext.py
enum DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
  }
}

// Call right after a launch: reports configuration errors and asynchronous faults seen so far, by kernel name.
inline void check_launch(const char* kernel) { check_cuda(cudaGetLastError(), kernel); }

inline cudaStream_t as_stream(std::uintptr_t handle) { return reinterpret_cast<cudaStream_t>(handle); }

}  // namespace dip

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace dip {

// Scalar conversions between storage types and fp32 (all arithmetic is fp32).
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Sum over the block of one value per thread (blockDim.x a multiple of 32, ≤ 1024); every thread gets the sum.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = 0.f;
  for (int w = 0; w < warps; ++w) total += scratch[w];
  return total;
}

}  // namespace dip

// Calls F<T>() with T the storage type of dtype code `code` (kFloat32, kFloat16, kBFloat16).
#define DIP_DISPATCH(code, F, ...)                                                       \
  switch (code) {                                                                        \
    case dip::kFloat32: F<float>(__VA_ARGS__); break;                                    \
    case dip::kFloat16: F<__half>(__VA_ARGS__); break;                                   \
    case dip::kBFloat16: F<__nv_bfloat16>(__VA_ARGS__); break;                           \
    default: throw std::invalid_argument("dip: dtype code must be 0 (fp32), 1 (fp16) or 2 (bf16)"); \
  }
