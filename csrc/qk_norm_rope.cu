// Op B in CUDA: QK RMSNorm + 2D RoPE from the qkv projection into the (B, H, T, h) attention layout (kernels.md
// §1 B; the Triton twin is dip_kernels/qk_norm_rope_triton.py). One warp per (token, head); lane l handles the
// rotated pairs (2i, 2i+1) for i = l, l + 32, … . The backward writes dqkv and, per block, fp32 partial sums of the
// two norm weights' gradients (blocks walk a fixed set of items, so the caller's sum is deterministic).
#include <cstdint>

#include "common.cuh"

namespace dip {
namespace {

constexpr int kWarps = 8;

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T>
__global__ void qk_norm_rope_fwd_kernel(const T* __restrict__ qkv, const float* __restrict__ qw,
                                        const float* __restrict__ kw, const float* __restrict__ cos_t,
                                        const float* __restrict__ sin_t, T* __restrict__ q, T* __restrict__ k,
                                        T* __restrict__ v, int64_t items, int64_t tokens, int heads, int hd,
                                        float eps) {
  const int lane = threadIdx.x % 32;
  const int half = hd / 2;
  for (int64_t item = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32; item < items;
       item += static_cast<int64_t>(gridDim.x) * kWarps) {
    const int64_t row = item / heads, head = item % heads, t = row % tokens, b = row / tokens;
    const int64_t D = static_cast<int64_t>(heads) * hd;
    const T* src = qkv + row * 3 * D + head * hd;
    const int64_t dst = ((b * heads + head) * tokens + t) * hd;
    for (int part = 0; part < 2; ++part) {
      const T* in = src + part * D;
      const float* w = part ? kw : qw;
      T* out = part ? k : q;
      float ss = 0.f;
      for (int i = lane; i < half; i += 32) {
        const float x0 = to_float(in[2 * i]), x1 = to_float(in[2 * i + 1]);
        ss += x0 * x0 + x1 * x1;
      }
      const float rstd = rsqrtf(warp_sum(ss) / hd + eps);
      for (int i = lane; i < half; i += 32) {
        const float n0 = to_float(in[2 * i]) * rstd * w[2 * i], n1 = to_float(in[2 * i + 1]) * rstd * w[2 * i + 1];
        const float c = cos_t[t * half + i], s = sin_t[t * half + i];
        out[dst + 2 * i] = from_float<T>(n0 * c - n1 * s);
        out[dst + 2 * i + 1] = from_float<T>(n0 * s + n1 * c);
      }
    }
    for (int e = lane; e < hd; e += 32) v[dst + e] = src[2 * D + e];
  }
}

template <typename T>
__global__ void qk_norm_rope_bwd_kernel(const T* __restrict__ dq, const T* __restrict__ dk, const T* __restrict__ dv,
                                        const T* __restrict__ qkv, const float* __restrict__ qw,
                                        const float* __restrict__ kw, const float* __restrict__ cos_t,
                                        const float* __restrict__ sin_t, T* __restrict__ dqkv,
                                        float* __restrict__ parts, int64_t items, int64_t tokens, int heads, int hd,
                                        float eps) {
  extern __shared__ float acc[];  // (kWarps, 2, hd): per-warp weight-gradient sums, reduced in warp order
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, half = hd / 2;
  float* mine = acc + warp * 2 * hd;
  for (int e = lane; e < 2 * hd; e += 32) mine[e] = 0.f;
  for (int64_t item = static_cast<int64_t>(blockIdx.x) * kWarps + warp; item < items;
       item += static_cast<int64_t>(gridDim.x) * kWarps) {
    const int64_t row = item / heads, head = item % heads, t = row % tokens, b = row / tokens;
    const int64_t D = static_cast<int64_t>(heads) * hd;
    const int64_t off = row * 3 * D + head * hd;
    const int64_t g = ((b * heads + head) * tokens + t) * hd;
    for (int part = 0; part < 2; ++part) {
      const T* in = qkv + off + part * D;
      const T* grad = part ? dk : dq;
      const float* w = part ? kw : qw;
      float ss = 0.f;
      for (int i = lane; i < half; i += 32) {
        const float x0 = to_float(in[2 * i]), x1 = to_float(in[2 * i + 1]);
        ss += x0 * x0 + x1 * x1;
      }
      const float rstd = rsqrtf(warp_sum(ss) / hd + eps);
      float proj = 0.f;
      for (int i = lane; i < half; i += 32) {
        const float c = cos_t[t * half + i], s = sin_t[t * half + i];
        const float g0 = to_float(grad[g + 2 * i]), g1 = to_float(grad[g + 2 * i + 1]);
        const float dn0 = g0 * c + g1 * s, dn1 = g1 * c - g0 * s;  // inverse rotation
        const float n0 = to_float(in[2 * i]) * rstd, n1 = to_float(in[2 * i + 1]) * rstd;
        mine[part * hd + 2 * i] += dn0 * n0;
        mine[part * hd + 2 * i + 1] += dn1 * n1;
        proj += dn0 * w[2 * i] * n0 + dn1 * w[2 * i + 1] * n1;
      }
      proj = warp_sum(proj) / hd;
      for (int i = lane; i < half; i += 32) {
        const float c = cos_t[t * half + i], s = sin_t[t * half + i];
        const float g0 = to_float(grad[g + 2 * i]), g1 = to_float(grad[g + 2 * i + 1]);
        const float dn0 = (g0 * c + g1 * s) * w[2 * i], dn1 = (g1 * c - g0 * s) * w[2 * i + 1];
        const float n0 = to_float(in[2 * i]) * rstd, n1 = to_float(in[2 * i + 1]) * rstd;
        dqkv[off + part * D + 2 * i] = from_float<T>((dn0 - n0 * proj) * rstd);
        dqkv[off + part * D + 2 * i + 1] = from_float<T>((dn1 - n1 * proj) * rstd);
      }
    }
    for (int e = lane; e < hd; e += 32) dqkv[off + 2 * D + e] = dv[g + e];
  }
  __syncthreads();
  for (int e = threadIdx.x; e < 2 * hd; e += blockDim.x) {
    float total = 0.f;
    for (int w = 0; w < kWarps; ++w) total += acc[w * 2 * hd + e];
    parts[static_cast<int64_t>(blockIdx.x) * 2 * hd + e] = total;
  }
}

template <typename T>
void launch_fwd(std::uintptr_t qkv, std::uintptr_t qw, std::uintptr_t kw, std::uintptr_t cos_t, std::uintptr_t sin_t,
                std::uintptr_t q, std::uintptr_t k, std::uintptr_t v, int64_t items, int64_t tokens, int heads,
                int hd, float eps, int blocks, std::uintptr_t stream) {
  qk_norm_rope_fwd_kernel<T><<<blocks, 32 * kWarps, 0, as_stream(stream)>>>(
      reinterpret_cast<const T*>(qkv), reinterpret_cast<const float*>(qw), reinterpret_cast<const float*>(kw),
      reinterpret_cast<const float*>(cos_t), reinterpret_cast<const float*>(sin_t), reinterpret_cast<T*>(q),
      reinterpret_cast<T*>(k), reinterpret_cast<T*>(v), items, tokens, heads, hd, eps);
  check_launch("qk_norm_rope_fwd_kernel");
}

template <typename T>
void launch_bwd(std::uintptr_t dq, std::uintptr_t dk, std::uintptr_t dv, std::uintptr_t qkv, std::uintptr_t qw,
                std::uintptr_t kw, std::uintptr_t cos_t, std::uintptr_t sin_t, std::uintptr_t dqkv,
                std::uintptr_t parts, int64_t items, int64_t tokens, int heads, int hd, float eps, int blocks,
                std::uintptr_t stream) {
  const size_t smem = static_cast<size_t>(kWarps) * 2 * hd * sizeof(float);
  qk_norm_rope_bwd_kernel<T><<<blocks, 32 * kWarps, smem, as_stream(stream)>>>(
      reinterpret_cast<const T*>(dq), reinterpret_cast<const T*>(dk), reinterpret_cast<const T*>(dv),
      reinterpret_cast<const T*>(qkv), reinterpret_cast<const float*>(qw), reinterpret_cast<const float*>(kw),
      reinterpret_cast<const float*>(cos_t), reinterpret_cast<const float*>(sin_t), reinterpret_cast<T*>(dqkv),
      reinterpret_cast<float*>(parts), items, tokens, heads, hd, eps);
  check_launch("qk_norm_rope_bwd_kernel");
}

}  // namespace

void qk_norm_rope_fwd(int dtype, std::uintptr_t qkv, std::uintptr_t qw, std::uintptr_t kw, std::uintptr_t cos_t,
                      std::uintptr_t sin_t, std::uintptr_t q, std::uintptr_t k, std::uintptr_t v, int64_t items,
                      int64_t tokens, int heads, int hd, float eps, int blocks, std::uintptr_t stream) {
  DIP_DISPATCH(dtype, launch_fwd, qkv, qw, kw, cos_t, sin_t, q, k, v, items, tokens, heads, hd, eps, blocks, stream);
}

void qk_norm_rope_bwd(int dtype, std::uintptr_t dq, std::uintptr_t dk, std::uintptr_t dv, std::uintptr_t qkv,
                      std::uintptr_t qw, std::uintptr_t kw, std::uintptr_t cos_t, std::uintptr_t sin_t,
                      std::uintptr_t dqkv, std::uintptr_t parts, int64_t items, int64_t tokens, int heads, int hd,
                      float eps, int blocks, std::uintptr_t stream) {
  DIP_DISPATCH(dtype, launch_bwd, dq, dk, dv, qkv, qw, kw, cos_t, sin_t, dqkv, parts, items, tokens, heads, hd, eps,
               blocks, stream);
}

}  // namespace dip
