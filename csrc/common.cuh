// Shared helpers of the torch-free CUDA extension (docs/kernels.md §6): launch-error checks that name the kernel,
// the dtype codes the Python wrappers pass, and stream handles taken as integers.
#pragma once

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <stdexcept>
#include <string>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

// Kernel launches are written DIP_LAUNCH(kernel, grid, block, shared bytes, stream)(args…): the CUDA launch, or,
// built with -DDIP_EMULATE by the host compiler, the emulator of csrc/emulation.h (tests without a GPU).
#ifdef DIP_EMULATE
#include "emulation.h"
#else
#define DIP_LAUNCH(kernel, grid, block, shared, stream) kernel<<<grid, block, shared, stream>>>
#endif

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

namespace dip {

// Scalar conversions between storage types and fp32 (all arithmetic is fp32).
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

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

// 16-byte vectorised access (docs/kernels.md §6): V consecutive elements of T moved as V·sizeof(T)/16 uint4 transfers
// when that is a whole number (the caller guarantees 16-byte alignment: see vec_width/aligned16), element by
// element otherwise (V = 1, the fallback for odd sizes or misaligned views). Values are fp32 in registers.
template <int V, typename T>
__device__ __forceinline__ void load_vec(const T* __restrict__ p, float (&out)[V]) {
  constexpr int bytes = V * static_cast<int>(sizeof(T));
  if constexpr (bytes % 16 == 0) {
    uint4 raw[bytes / 16];
#pragma unroll
    for (int k = 0; k < bytes / 16; ++k) raw[k] = reinterpret_cast<const uint4*>(p)[k];
    const T* e = reinterpret_cast<const T*>(raw);
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] = to_float(e[i]);
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] = to_float(p[i]);
  }
}

// Two values rounded to T and packed into one 32-bit word (fp32: one value per word, see store_vec).
__device__ __forceinline__ uint32_t pack2(__nv_bfloat16*, float a, float b) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<const uint32_t*>(&h);
}
__device__ __forceinline__ uint32_t pack2(__half*, float a, float b) {
  const __half2 h = __floats2half2_rn(a, b);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// One 16-byte store of four words: a single st.global.v4 for global memory (NVVM splits a uint4 assignment built
// from separate registers into four 32-bit stores), a plain uint4 store for shared memory (the row caches). The
// emulator copies the bytes.
__device__ __forceinline__ void store16(void* p, const uint32_t* w) {
#ifdef DIP_EMULATE
  memcpy(p, w, 16);
#else
  if (__isGlobal(p)) {
    asm volatile("st.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(w[0]), "r"(w[1]), "r"(w[2]), "r"(w[3])
                 : "memory");
  } else {
    *static_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
  }
#endif
}

// The 32-bit words of V values of T (fp32: the values' bits; 16-bit types: pairs packed in registers), so that a
// 16-byte store is one st.global.v4 (the element-wise build compiled to 16-bit stores).
template <int V, typename T>
__device__ __forceinline__ void pack_words(const float (&in)[V], uint32_t (&words)[V * sizeof(T) / 4]) {
  if constexpr (sizeof(T) == 4) {
#pragma unroll
    for (int i = 0; i < V; ++i) memcpy(&words[i], &in[i], 4);
  } else {
#pragma unroll
    for (int i = 0; i < V / 2; ++i) words[i] = pack2(static_cast<T*>(nullptr), in[2 * i], in[2 * i + 1]);
  }
}

template <int V, typename T>
__device__ __forceinline__ void store_vec(T* __restrict__ p, const float (&in)[V]) {
  constexpr int bytes = V * static_cast<int>(sizeof(T));
  if constexpr (bytes % 16 == 0) {
    uint32_t words[bytes / 4];
    pack_words<V, T>(in, words);
#pragma unroll
    for (int k = 0; k < bytes / 16; ++k) store16(reinterpret_cast<char*>(p) + 16 * k, &words[4 * k]);
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) p[i] = from_float<T>(in[i]);
  }
}

// Elements of T per 16-byte access: 4 (fp32) or 8 (fp16/bf16).
template <typename T> constexpr int vec_width() { return 16 / static_cast<int>(sizeof(T)); }

// True when every non-null pointer is 16-byte aligned (null pointers are the absent optional operands).
inline bool aligned16(std::initializer_list<std::uintptr_t> pointers) {
  for (std::uintptr_t p : pointers)
    if (p % 16 != 0) return false;
  return true;
}

// True when every element count/stride is a multiple of the vector width v.
inline bool multiples_of(int v, std::initializer_list<int64_t> counts) {
  for (int64_t n : counts)
    if (n % v != 0) return false;
  return true;
}

// Threads for one row of D elements moved V at a time: one vector per thread, whole warps, 32 … 1024.
inline int row_threads(int D, int V) {
  const int vectors = (D + V - 1) / V;
  const int threads = (vectors + 31) / 32 * 32;
  return threads < 32 ? 32 : threads > 1024 ? 1024 : threads;
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
