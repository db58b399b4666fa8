// Op A in CUDA: the adaLN block boundary (kernels.md §1 A; the Triton twin is dip_kernels/block_boundary_triton.py).
//
// forward, one block per row (token):   r = x + gate[b]·branch (rounded to T and stored),
//                                        n = Norm(r) (RMSNorm or LayerNorm without affine), h = n·w·(1 + scale[b]) + shift[b]
// backward, one block per (sample, token chunk): dx, dbranch per row; fp32 per-block partial sums of dshift, dscale,
// dgate (over the chunk's tokens) and dweight, summed deterministically by the caller. No allocation, no sync:
// everything runs on the given stream (CUDA-graph capturable). Offsets are 64-bit.
#include <cstdint>

#include "common.cuh"

namespace dip {
namespace {

template <typename T>
__global__ void block_boundary_fwd_kernel(const T* __restrict__ x, const T* __restrict__ br, const T* __restrict__ gate,
                                          const float* __restrict__ w, const T* __restrict__ shift,
                                          const T* __restrict__ scale, T* __restrict__ r_out, T* __restrict__ h,
                                          float* __restrict__ mean_out, float* __restrict__ rstd_out, int64_t rows,
                                          int64_t tokens, int D, int64_t s_gate, int64_t s_shift, int64_t s_scale,
                                          float eps, int has_res, int has_w, int layer) {
  extern __shared__ float smem[];  // row values (D) + reduction scratch (32)
  float* row_v = smem;
  float* scratch = smem + D;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t b = row / tokens, base = row * D;
    float sum = 0.f;
    for (int c = threadIdx.x; c < D; c += blockDim.x) {
      float v = to_float(x[base + c]);
      if (has_res) {
        const T rounded = from_float<T>(v + to_float(gate[b * s_gate + c]) * to_float(br[base + c]));
        r_out[base + c] = rounded;
        v = to_float(rounded);  // the norm sees the stored residual, as the next block will
      }
      row_v[c] = v;
      sum += layer ? v : v * v;
    }
    float mean = 0.f, rstd;
    if (layer) {
      mean = block_sum(sum, scratch) / D;
      float var = 0.f;
      for (int c = threadIdx.x; c < D; c += blockDim.x) var += (row_v[c] - mean) * (row_v[c] - mean);
      rstd = rsqrtf(block_sum(var, scratch) / D + eps);
    } else {
      rstd = rsqrtf(block_sum(sum, scratch) / D + eps);
    }
    if (threadIdx.x == 0) {
      rstd_out[row] = rstd;
      if (layer) mean_out[row] = mean;
    }
    for (int c = threadIdx.x; c < D; c += blockDim.x) {
      float n = (row_v[c] - mean) * rstd;
      if (has_w) n *= w[c];
      h[base + c] = from_float<T>(n * (1.f + to_float(scale[b * s_scale + c])) + to_float(shift[b * s_shift + c]));
    }
    __syncthreads();  // row_v is rewritten by the next row
  }
}

template <typename T>
__global__ void block_boundary_bwd_kernel(const T* __restrict__ dh, const T* __restrict__ dr,
                                          const T* __restrict__ r, const T* __restrict__ br,
                                          const T* __restrict__ gate, const float* __restrict__ w,
                                          const T* __restrict__ scale, const float* __restrict__ mean_in,
                                          const float* __restrict__ rstd_in, T* __restrict__ dx, T* __restrict__ dbr,
                                          float* __restrict__ p_gate, float* __restrict__ p_shift,
                                          float* __restrict__ p_scale, float* __restrict__ p_w, int64_t tokens, int D,
                                          int chunk, int64_t s_gate, int64_t s_scale, int has_res, int has_dr,
                                          int has_w, int layer) {
  extern __shared__ float smem[];  // acc shift, scale, gate, w (4D) + n, dn rows (2D) + scratch (32)
  float *acc_shift = smem, *acc_scale = smem + D, *acc_gate = smem + 2 * D, *acc_w = smem + 3 * D;
  float *n_row = smem + 4 * D, *dn_row = smem + 5 * D, *scratch = smem + 6 * D;
  const int64_t b = blockIdx.x;
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * chunk;
  const int64_t t1 = t0 + chunk < tokens ? t0 + chunk : tokens;
  for (int c = threadIdx.x; c < D; c += blockDim.x) acc_shift[c] = acc_scale[c] = acc_gate[c] = acc_w[c] = 0.f;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t row = b * tokens + t, base = row * D;
    const float mean = layer ? mean_in[row] : 0.f, rstd = rstd_in[row];
    float s1 = 0.f, s2 = 0.f;
    for (int c = threadIdx.x; c < D; c += blockDim.x) {
      const float g = to_float(dh[base + c]);
      const float n = (to_float(r[base + c]) - mean) * rstd;
      const float wc = has_w ? w[c] : 1.f;
      const float dy = g * (1.f + to_float(scale[b * s_scale + c]));
      acc_shift[c] += g;
      acc_scale[c] += g * n * wc;
      acc_w[c] += dy * n;
      const float dn = dy * wc;
      n_row[c] = n;
      dn_row[c] = dn;
      s1 += dn * n;
      s2 += dn;
    }
    const float proj = block_sum(s1, scratch) / D;
    const float mean_dn = layer ? block_sum(s2, scratch) / D : 0.f;
    for (int c = threadIdx.x; c < D; c += blockDim.x) {
      float d = (dn_row[c] - n_row[c] * proj - mean_dn) * rstd;
      if (has_dr) d += to_float(dr[base + c]);
      dx[base + c] = from_float<T>(d);
      if (has_res) {
        dbr[base + c] = from_float<T>(d * to_float(gate[b * s_gate + c]));
        acc_gate[c] += d * to_float(br[base + c]);
      }
    }
    __syncthreads();
  }
  const int64_t part = (b * gridDim.y + blockIdx.y) * D;
  for (int c = threadIdx.x; c < D; c += blockDim.x) {
    p_shift[part + c] = acc_shift[c];
    p_scale[part + c] = acc_scale[c];
    if (has_res) p_gate[part + c] = acc_gate[c];
    if (has_w) p_w[part + c] = acc_w[c];
  }
}

int threads_for(int D) { return D >= 1024 ? 512 : D >= 256 ? 256 : 128; }

template <typename T>
void launch_fwd(std::uintptr_t x, std::uintptr_t br, std::uintptr_t gate, std::uintptr_t w, std::uintptr_t shift,
                std::uintptr_t scale, std::uintptr_t r_out, std::uintptr_t h, std::uintptr_t mean, std::uintptr_t rstd,
                int64_t rows, int64_t tokens, int D, int64_t s_gate, int64_t s_shift, int64_t s_scale, float eps,
                int has_res, int has_w, int layer, std::uintptr_t stream) {
  const int threads = threads_for(D);
  const size_t smem = (D + 32) * sizeof(float);
  const int64_t grid = rows < 65535 * 8 ? rows : 65535 * 8;
  auto kernel = block_boundary_fwd_kernel<T>;
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
             "block_boundary_fwd_kernel (shared memory)");
  kernel<<<static_cast<unsigned>(grid), threads, smem, as_stream(stream)>>>(
      reinterpret_cast<const T*>(x), reinterpret_cast<const T*>(br), reinterpret_cast<const T*>(gate),
      reinterpret_cast<const float*>(w), reinterpret_cast<const T*>(shift), reinterpret_cast<const T*>(scale),
      reinterpret_cast<T*>(r_out), reinterpret_cast<T*>(h), reinterpret_cast<float*>(mean),
      reinterpret_cast<float*>(rstd), rows, tokens, D, s_gate, s_shift, s_scale, eps, has_res, has_w, layer);
  check_launch("block_boundary_fwd_kernel");
}

template <typename T>
void launch_bwd(std::uintptr_t dh, std::uintptr_t dr, std::uintptr_t r, std::uintptr_t br, std::uintptr_t gate,
                std::uintptr_t w, std::uintptr_t scale, std::uintptr_t mean, std::uintptr_t rstd, std::uintptr_t dx,
                std::uintptr_t dbr, std::uintptr_t p_gate, std::uintptr_t p_shift, std::uintptr_t p_scale,
                std::uintptr_t p_w, int64_t batch, int64_t tokens, int D, int chunks, int64_t s_gate, int64_t s_scale,
                int has_res, int has_dr, int has_w, int layer, std::uintptr_t stream) {
  const int threads = threads_for(D);
  const size_t smem = (6 * D + 32) * sizeof(float);
  const int chunk = static_cast<int>((tokens + chunks - 1) / chunks);
  auto kernel = block_boundary_bwd_kernel<T>;
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
             "block_boundary_bwd_kernel (shared memory)");
  kernel<<<dim3(static_cast<unsigned>(batch), static_cast<unsigned>(chunks)), threads, smem, as_stream(stream)>>>(
      reinterpret_cast<const T*>(dh), reinterpret_cast<const T*>(dr), reinterpret_cast<const T*>(r),
      reinterpret_cast<const T*>(br), reinterpret_cast<const T*>(gate), reinterpret_cast<const float*>(w),
      reinterpret_cast<const T*>(scale), reinterpret_cast<const float*>(mean), reinterpret_cast<const float*>(rstd),
      reinterpret_cast<T*>(dx), reinterpret_cast<T*>(dbr), reinterpret_cast<float*>(p_gate),
      reinterpret_cast<float*>(p_shift), reinterpret_cast<float*>(p_scale), reinterpret_cast<float*>(p_w), tokens, D,
      chunk, s_gate, s_scale, has_res, has_dr, has_w, layer);
  check_launch("block_boundary_bwd_kernel");
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
