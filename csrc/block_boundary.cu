// Op A in CUDA: the adaLN block boundary (docs/kernels.md §1 A; the Triton twin: dip_kernels/block_boundary/triton.py).
//
// Global accesses move 16 bytes at a time when every pointer is 16-byte aligned and D and the modulation strides
// are multiples of the vector width (8 bf16/fp16, 4 fp32); otherwise the same kernels run element by element.
// forward, one block per row (token):   r = x + gate[b]·branch (rounded to T and stored),
//                                        n = Norm(r) (RMSNorm or LayerNorm without affine),
//                                        h = n·w·(1 + scale[b]) + shift[b]
// backward, one block per (sample, token chunk): dx, dbranch per row; fp32 per-block partial sums of dshift, dscale,
// dgate (over the chunk's tokens) and dweight, summed deterministically by the caller. No allocation, no sync:
// everything runs on the given stream (CUDA-graph capturable). Offsets are 64-bit.
#include <cstdint>

#include "common.cuh"

namespace dip {
namespace {

template <typename T, int V>
__global__ void block_boundary_fwd_kernel(const T* __restrict__ x, const T* __restrict__ br, const T* __restrict__ gate,
                                          const float* __restrict__ w, const T* __restrict__ shift,
                                          const T* __restrict__ scale, T* __restrict__ r_out, T* __restrict__ h,
                                          float* __restrict__ mean_out, float* __restrict__ rstd_out, int64_t rows,
                                          int64_t tokens, int D, int64_t s_gate, int64_t s_shift, int64_t s_scale,
                                          float eps, int has_res, int has_w, int layer) {
  extern __shared__ __align__(16) float smem[];  // row values (D) + reduction scratch (32)
  float* row_v = smem;
  float* scratch = smem + D;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t b = row / tokens, base = row * D;
    float sum = 0.f;
    for (int c = threadIdx.x * V; c < D; c += blockDim.x * V) {
      float v[V];
      load_vec<V>(x + base + c, v);
      if (has_res) {
        float g[V], branch[V];
        load_vec<V>(gate + b * s_gate + c, g);
        load_vec<V>(br + base + c, branch);
#pragma unroll
        for (int i = 0; i < V; ++i) v[i] = to_float(from_float<T>(v[i] + g[i] * branch[i]));  // stored residual
        store_vec<V>(r_out + base + c, v);  // the norm sees it as the next block will
      }
#pragma unroll
      for (int i = 0; i < V; ++i) sum += layer ? v[i] : v[i] * v[i];
      store_vec<V>(row_v + c, v);
    }
    float mean = 0.f, rstd;
    if (layer) {
      mean = block_sum(sum, scratch) / D;
      float var = 0.f;
      for (int c = threadIdx.x * V; c < D; c += blockDim.x * V) {
        float v[V];
        load_vec<V>(row_v + c, v);
#pragma unroll
        for (int i = 0; i < V; ++i) var += (v[i] - mean) * (v[i] - mean);
      }
      rstd = rsqrtf(block_sum(var, scratch) / D + eps);
    } else {
      rstd = rsqrtf(block_sum(sum, scratch) / D + eps);
    }
    if (threadIdx.x == 0) {
      rstd_out[row] = rstd;
      if (layer) mean_out[row] = mean;
    }
    for (int c = threadIdx.x * V; c < D; c += blockDim.x * V) {
      float v[V], sc[V], sh[V], wv[V];
      load_vec<V>(row_v + c, v);
      load_vec<V>(scale + b * s_scale + c, sc);
      load_vec<V>(shift + b * s_shift + c, sh);
      if (has_w) load_vec<V>(w + c, wv);
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const float n = (v[i] - mean) * rstd * (has_w ? wv[i] : 1.f);
        v[i] = n * (1.f + sc[i]) + sh[i];
      }
      store_vec<V>(h + base + c, v);
    }
    __syncthreads();  // row_v is rewritten by the next row
  }
}

// Adds a[i] += d[i] to a thread-owned V-slice of a shared fp32 accumulator row.
template <int V>
__device__ __forceinline__ void accumulate(float* acc, const float (&d)[V]) {
  float a[V];
  load_vec<V>(acc, a);
#pragma unroll
  for (int i = 0; i < V; ++i) a[i] += d[i];
  store_vec<V>(acc, a);
}

template <typename T, int V>
__global__ void block_boundary_bwd_kernel(const T* __restrict__ dh, const T* __restrict__ dr,
                                          const T* __restrict__ r, const T* __restrict__ br,
                                          const T* __restrict__ gate, const float* __restrict__ w,
                                          const T* __restrict__ scale, const float* __restrict__ mean_in,
                                          const float* __restrict__ rstd_in, T* __restrict__ dx, T* __restrict__ dbr,
                                          float* __restrict__ p_gate, float* __restrict__ p_shift,
                                          float* __restrict__ p_scale, float* __restrict__ p_w, int64_t tokens, int D,
                                          int chunk, int64_t s_gate, int64_t s_scale, int has_res, int has_dr,
                                          int has_w, int layer) {
  // acc shift, scale, gate, w (4D) + n, dn rows (2D) + scratch (32); each thread owns the same V-slices of every row
  extern __shared__ __align__(16) float smem[];
  float *acc_shift = smem, *acc_scale = smem + D, *acc_gate = smem + 2 * D, *acc_w = smem + 3 * D;
  float *n_row = smem + 4 * D, *dn_row = smem + 5 * D, *scratch = smem + 6 * D;
  const int64_t b = blockIdx.x;
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * chunk;
  const int64_t t1 = t0 + chunk < tokens ? t0 + chunk : tokens;
  for (int c = threadIdx.x; c < 4 * D; c += blockDim.x) smem[c] = 0.f;
  __syncthreads();
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t row = b * tokens + t, base = row * D;
    const float mean = layer ? mean_in[row] : 0.f, rstd = rstd_in[row];
    float s1 = 0.f, s2 = 0.f;
    for (int c = threadIdx.x * V; c < D; c += blockDim.x * V) {
      float g[V], n[V], sc[V], wv[V], gn[V], dyn[V], dn[V];
      load_vec<V>(dh + base + c, g);
      load_vec<V>(r + base + c, n);
      load_vec<V>(scale + b * s_scale + c, sc);
      if (has_w) load_vec<V>(w + c, wv);
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const float wc = has_w ? wv[i] : 1.f;
        const float dy = g[i] * (1.f + sc[i]);
        n[i] = (n[i] - mean) * rstd;
        gn[i] = g[i] * n[i] * wc;  // dscale
        dyn[i] = dy * n[i];        // dweight
        dn[i] = dy * wc;
        s1 += dn[i] * n[i];
        s2 += dn[i];
      }
      accumulate<V>(acc_shift + c, g);
      accumulate<V>(acc_scale + c, gn);
      accumulate<V>(acc_w + c, dyn);
      store_vec<V>(n_row + c, n);
      store_vec<V>(dn_row + c, dn);
    }
    const float proj = block_sum(s1, scratch) / D;
    const float mean_dn = layer ? block_sum(s2, scratch) / D : 0.f;
    for (int c = threadIdx.x * V; c < D; c += blockDim.x * V) {
      float n[V], d[V], extra[V];
      load_vec<V>(n_row + c, n);
      load_vec<V>(dn_row + c, d);
#pragma unroll
      for (int i = 0; i < V; ++i) d[i] = (d[i] - n[i] * proj - mean_dn) * rstd;
      if (has_dr) {
        load_vec<V>(dr + base + c, extra);
#pragma unroll
        for (int i = 0; i < V; ++i) d[i] += extra[i];
      }
      store_vec<V>(dx + base + c, d);
      if (has_res) {
        float g[V], branch[V];
        load_vec<V>(gate + b * s_gate + c, g);
        load_vec<V>(br + base + c, branch);
#pragma unroll
        for (int i = 0; i < V; ++i) {
          g[i] *= d[i];       // dbranch
          branch[i] *= d[i];  // dgate contribution
        }
        store_vec<V>(dbr + base + c, g);
        accumulate<V>(acc_gate + c, branch);
      }
    }
    __syncthreads();
  }
  const int64_t part = (b * gridDim.y + blockIdx.y) * D;
  for (int c = threadIdx.x * V; c < D; c += blockDim.x * V) {
    float a[V];
    load_vec<V>(acc_shift + c, a);
    store_vec<V>(p_shift + part + c, a);
    load_vec<V>(acc_scale + c, a);
    store_vec<V>(p_scale + part + c, a);
    if (has_res) {
      load_vec<V>(acc_gate + c, a);
      store_vec<V>(p_gate + part + c, a);
    }
    if (has_w) {
      load_vec<V>(acc_w + c, a);
      store_vec<V>(p_w + part + c, a);
    }
  }
}

template <typename T, int V>
void launch_fwd_v(std::uintptr_t x, std::uintptr_t br, std::uintptr_t gate, std::uintptr_t w, std::uintptr_t shift,
                  std::uintptr_t scale, std::uintptr_t r_out, std::uintptr_t h, std::uintptr_t mean,
                  std::uintptr_t rstd, int64_t rows, int64_t tokens, int D, int64_t s_gate, int64_t s_shift,
                  int64_t s_scale, float eps, int has_res, int has_w, int layer, std::uintptr_t stream) {
  const size_t smem = (D + 32) * sizeof(float);
  const int64_t grid = rows < 65535 * 8 ? rows : 65535 * 8;
  auto kernel = block_boundary_fwd_kernel<T, V>;
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
             "block_boundary_fwd_kernel (shared memory)");
  DIP_LAUNCH(kernel, static_cast<unsigned>(grid), row_threads(D, V), smem, as_stream(stream))(
      reinterpret_cast<const T*>(x), reinterpret_cast<const T*>(br), reinterpret_cast<const T*>(gate),
      reinterpret_cast<const float*>(w), reinterpret_cast<const T*>(shift), reinterpret_cast<const T*>(scale),
      reinterpret_cast<T*>(r_out), reinterpret_cast<T*>(h), reinterpret_cast<float*>(mean),
      reinterpret_cast<float*>(rstd), rows, tokens, D, s_gate, s_shift, s_scale, eps, has_res, has_w, layer);
  check_launch("block_boundary_fwd_kernel");
}

template <typename T>
void launch_fwd(std::uintptr_t x, std::uintptr_t br, std::uintptr_t gate, std::uintptr_t w, std::uintptr_t shift,
                std::uintptr_t scale, std::uintptr_t r_out, std::uintptr_t h, std::uintptr_t mean, std::uintptr_t rstd,
                int64_t rows, int64_t tokens, int D, int64_t s_gate, int64_t s_shift, int64_t s_scale, float eps,
                int has_res, int has_w, int layer, std::uintptr_t stream) {
  constexpr int V = vec_width<T>();
  const bool vec =
      aligned16({x, br, gate, w, shift, scale, r_out, h}) && multiples_of(V, {D, s_gate, s_shift, s_scale});
  (vec ? launch_fwd_v<T, V> : launch_fwd_v<T, 1>)(x, br, gate, w, shift, scale, r_out, h, mean, rstd, rows, tokens, D,
                                                  s_gate, s_shift, s_scale, eps, has_res, has_w, layer, stream);
}

template <typename T, int V>
void launch_bwd_v(std::uintptr_t dh, std::uintptr_t dr, std::uintptr_t r, std::uintptr_t br, std::uintptr_t gate,
                  std::uintptr_t w, std::uintptr_t scale, std::uintptr_t mean, std::uintptr_t rstd, std::uintptr_t dx,
                  std::uintptr_t dbr, std::uintptr_t p_gate, std::uintptr_t p_shift, std::uintptr_t p_scale,
                  std::uintptr_t p_w, int64_t batch, int64_t tokens, int D, int chunks, int64_t s_gate,
                  int64_t s_scale, int has_res, int has_dr, int has_w, int layer, std::uintptr_t stream) {
  const size_t smem = (6 * D + 32) * sizeof(float);
  const int chunk = static_cast<int>((tokens + chunks - 1) / chunks);
  auto kernel = block_boundary_bwd_kernel<T, V>;
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
             "block_boundary_bwd_kernel (shared memory)");
  DIP_LAUNCH(kernel, dim3(static_cast<unsigned>(batch), static_cast<unsigned>(chunks)), row_threads(D, V), smem,
             as_stream(stream))(
      reinterpret_cast<const T*>(dh), reinterpret_cast<const T*>(dr), reinterpret_cast<const T*>(r),
      reinterpret_cast<const T*>(br), reinterpret_cast<const T*>(gate), reinterpret_cast<const float*>(w),
      reinterpret_cast<const T*>(scale), reinterpret_cast<const float*>(mean), reinterpret_cast<const float*>(rstd),
      reinterpret_cast<T*>(dx), reinterpret_cast<T*>(dbr), reinterpret_cast<float*>(p_gate),
      reinterpret_cast<float*>(p_shift), reinterpret_cast<float*>(p_scale), reinterpret_cast<float*>(p_w), tokens, D,
      chunk, s_gate, s_scale, has_res, has_dr, has_w, layer);
  check_launch("block_boundary_bwd_kernel");
}

template <typename T>
void launch_bwd(std::uintptr_t dh, std::uintptr_t dr, std::uintptr_t r, std::uintptr_t br, std::uintptr_t gate,
                std::uintptr_t w, std::uintptr_t scale, std::uintptr_t mean, std::uintptr_t rstd, std::uintptr_t dx,
                std::uintptr_t dbr, std::uintptr_t p_gate, std::uintptr_t p_shift, std::uintptr_t p_scale,
                std::uintptr_t p_w, int64_t batch, int64_t tokens, int D, int chunks, int64_t s_gate, int64_t s_scale,
                int has_res, int has_dr, int has_w, int layer, std::uintptr_t stream) {
  constexpr int V = vec_width<T>();
  const bool vec = aligned16({dh, dr, r, br, gate, w, scale, dx, dbr, p_gate, p_shift, p_scale, p_w}) &&
                   multiples_of(V, {D, s_gate, s_scale});
  (vec ? launch_bwd_v<T, V> : launch_bwd_v<T, 1>)(dh, dr, r, br, gate, w, scale, mean, rstd, dx, dbr, p_gate, p_shift,
                                                  p_scale, p_w, batch, tokens, D, chunks, s_gate, s_scale, has_res,
                                                  has_dr, has_w, layer, stream);
}

}  // namespace

void block_boundary_fwd(int dtype, std::uintptr_t x, std::uintptr_t br, std::uintptr_t gate, std::uintptr_t w,
                        std::uintptr_t shift, std::uintptr_t scale, std::uintptr_t r_out, std::uintptr_t h,
                        std::uintptr_t mean, std::uintptr_t rstd, int64_t rows, int64_t tokens, int D, int64_t s_gate,
                        int64_t s_shift, int64_t s_scale, float eps, int has_res, int has_w, int layer,
                        std::uintptr_t stream) {
  DIP_DISPATCH(dtype, launch_fwd, x, br, gate, w, shift, scale, r_out, h, mean, rstd, rows, tokens, D, s_gate, s_shift,
               s_scale, eps, has_res, has_w, layer, stream);
}

void block_boundary_bwd(int dtype, std::uintptr_t dh, std::uintptr_t dr, std::uintptr_t r, std::uintptr_t br,
                        std::uintptr_t gate, std::uintptr_t w, std::uintptr_t scale, std::uintptr_t mean,
                        std::uintptr_t rstd, std::uintptr_t dx, std::uintptr_t dbr, std::uintptr_t p_gate,
                        std::uintptr_t p_shift, std::uintptr_t p_scale, std::uintptr_t p_w, int64_t batch,
                        int64_t tokens, int D, int chunks, int64_t s_gate, int64_t s_scale, int has_res, int has_dr,
                        int has_w, int layer, std::uintptr_t stream) {
  DIP_DISPATCH(dtype, launch_bwd, dh, dr, r, br, gate, w, scale, mean, rstd, dx, dbr, p_gate, p_shift, p_scale, p_w,
               batch, tokens, D, chunks, s_gate, s_scale, has_res, has_dr, has_w, layer, stream);
}

}  // namespace dip
