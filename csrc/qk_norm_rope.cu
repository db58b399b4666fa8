// Op B in CUDA: QK RMSNorm + 2D RoPE from the qkv projection into the (B, H, T, h) attention layout (docs/kernels.md
// §1 B; the Triton twin is dip_kernels/qk_norm_rope/triton.py). One warp per (token, head); each lane moves 16
// bytes (V elements = V/2 rotated pairs) at a time when the head size is whole vectors and the pointers align,
// else one pair at a time. The backward writes dqkv and, per block, fp32 partial sums of the
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

// 1/sqrt(mean(x²) + eps) over one head's hd values, each lane reading V at a time; every lane gets it.
template <int V, typename T>
__device__ __forceinline__ float head_rstd(const T* __restrict__ in, int lane, int hd, float eps) {
  float ss = 0.f;
  for (int e0 = lane * V; e0 < hd; e0 += 32 * V) {
    float x[V];
    load_vec<V>(in + e0, x);
#pragma unroll
    for (int e = 0; e < V; ++e) ss += x[e] * x[e];
  }
  return rsqrtf(warp_sum(ss) / hd + eps);
}

// Lane l handles V consecutive elements = V/2 rotated pairs starting at pair i = l·V/2, then i + 32·V/2, … .
template <typename T, int V>
__global__ void qk_norm_rope_fwd_kernel(const T* __restrict__ qkv, const float* __restrict__ qw,
                                        const float* __restrict__ kw, const float* __restrict__ cos_t,
                                        const float* __restrict__ sin_t, T* __restrict__ q, T* __restrict__ k,
                                        T* __restrict__ v, int64_t items, int64_t tokens, int heads, int hd,
                                        float eps) {
  constexpr int PAIRS = V / 2;
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
      const float rstd = head_rstd<V>(in, lane, hd, eps);
      for (int i = lane * PAIRS; i < half; i += 32 * PAIRS) {
        float x[V], wv[V], c[PAIRS], s[PAIRS];
        load_vec<V>(in + 2 * i, x);
        load_vec<V>(w + 2 * i, wv);
        load_vec<PAIRS>(cos_t + t * half + i, c);
        load_vec<PAIRS>(sin_t + t * half + i, s);
#pragma unroll
        for (int j = 0; j < PAIRS; ++j) {
          const float n0 = x[2 * j] * rstd * wv[2 * j], n1 = x[2 * j + 1] * rstd * wv[2 * j + 1];
          x[2 * j] = n0 * c[j] - n1 * s[j];
          x[2 * j + 1] = n0 * s[j] + n1 * c[j];
        }
        store_vec<V>(out + dst + 2 * i, x);
      }
    }
    for (int e = lane * V; e < hd; e += 32 * V) {
      float x[V];
      load_vec<V>(src + 2 * D + e, x);  // exact: T → fp32 → T
      store_vec<V>(v + dst + e, x);
    }
  }
}

// Element strides (batch, head, token) of a (B, H, T, h) gradient with unit last stride: the attention backward may
// hand the gradients over (B, T, H, h)-ordered, and reading them in place saves a copy of each.
struct GradStrides {
  int64_t b, h, t;
  __host__ __device__ int64_t at(int64_t batch, int64_t head, int64_t token) const {
    return batch * b + head * h + token * t;
  }
};

template <typename T, int V>
__global__ void qk_norm_rope_bwd_kernel(const T* __restrict__ dq, const T* __restrict__ dk, const T* __restrict__ dv,
                                        const T* __restrict__ qkv, const float* __restrict__ qw,
                                        const float* __restrict__ kw, const float* __restrict__ cos_t,
                                        const float* __restrict__ sin_t, T* __restrict__ dqkv,
                                        float* __restrict__ parts, int64_t items, int64_t tokens, int heads, int hd,
                                        float eps, GradStrides sq, GradStrides sk, GradStrides sv) {
  constexpr int PAIRS = V / 2;
  extern __shared__ __align__(16) float acc[];  // (kWarps, 2, hd): per-warp weight-gradient sums, reduced in warp order
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, half = hd / 2;
  float* mine = acc + warp * 2 * hd;
  for (int e = lane; e < 2 * hd; e += 32) mine[e] = 0.f;
  __syncwarp();
  for (int64_t item = static_cast<int64_t>(blockIdx.x) * kWarps + warp; item < items;
       item += static_cast<int64_t>(gridDim.x) * kWarps) {
    const int64_t row = item / heads, head = item % heads, t = row % tokens, b = row / tokens;
    const int64_t D = static_cast<int64_t>(heads) * hd;
    const int64_t off = row * 3 * D + head * hd;
    for (int part = 0; part < 2; ++part) {
      const T* in = qkv + off + part * D;
      const T* grad = part ? dk + sk.at(b, head, t) : dq + sq.at(b, head, t);
      const float* w = part ? kw : qw;
      const float rstd = head_rstd<V>(in, lane, hd, eps);
      float proj = 0.f;
      for (int i = lane * PAIRS; i < half; i += 32 * PAIRS) {
        float x[V], gr[V], wv[V], a[V], c[PAIRS], s[PAIRS];
        load_vec<V>(in + 2 * i, x);
        load_vec<V>(grad + 2 * i, gr);
        load_vec<V>(w + 2 * i, wv);
        load_vec<V>(mine + part * hd + 2 * i, a);
        load_vec<PAIRS>(cos_t + t * half + i, c);
        load_vec<PAIRS>(sin_t + t * half + i, s);
#pragma unroll
        for (int j = 0; j < PAIRS; ++j) {
          const float g0 = gr[2 * j], g1 = gr[2 * j + 1];
          const float dn0 = g0 * c[j] + g1 * s[j], dn1 = g1 * c[j] - g0 * s[j];  // inverse rotation
          const float n0 = x[2 * j] * rstd, n1 = x[2 * j + 1] * rstd;
          a[2 * j] += dn0 * n0;
          a[2 * j + 1] += dn1 * n1;
          proj += dn0 * wv[2 * j] * n0 + dn1 * wv[2 * j + 1] * n1;
        }
        store_vec<V>(mine + part * hd + 2 * i, a);
      }
      proj = warp_sum(proj) / hd;
      for (int i = lane * PAIRS; i < half; i += 32 * PAIRS) {
        float x[V], gr[V], wv[V], c[PAIRS], s[PAIRS];
        load_vec<V>(in + 2 * i, x);
        load_vec<V>(grad + 2 * i, gr);
        load_vec<V>(w + 2 * i, wv);
        load_vec<PAIRS>(cos_t + t * half + i, c);
        load_vec<PAIRS>(sin_t + t * half + i, s);
#pragma unroll
        for (int j = 0; j < PAIRS; ++j) {
          const float g0 = gr[2 * j], g1 = gr[2 * j + 1];
          const float dn0 = (g0 * c[j] + g1 * s[j]) * wv[2 * j], dn1 = (g1 * c[j] - g0 * s[j]) * wv[2 * j + 1];
          const float n0 = x[2 * j] * rstd, n1 = x[2 * j + 1] * rstd;
          x[2 * j] = (dn0 - n0 * proj) * rstd;
          x[2 * j + 1] = (dn1 - n1 * proj) * rstd;
        }
        store_vec<V>(dqkv + off + part * D + 2 * i, x);
      }
    }
    for (int e = lane * V; e < hd; e += 32 * V) {
      float x[V];
      load_vec<V>(dv + sv.at(b, head, t) + e, x);
      store_vec<V>(dqkv + off + 2 * D + e, x);
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < 2 * hd; e += blockDim.x) {
    float total = 0.f;
    for (int w = 0; w < kWarps; ++w) total += acc[w * 2 * hd + e];
    parts[static_cast<int64_t>(blockIdx.x) * 2 * hd + e] = total;
  }
}

// 16-byte vectors when the head size is whole vectors and every pointer is aligned; else pairs element by element.
template <typename T>
bool vectorised(int hd, std::initializer_list<std::uintptr_t> pointers) {
  return hd % vec_width<T>() == 0 && aligned16(pointers);
}

template <typename T>
void launch_fwd(std::uintptr_t qkv, std::uintptr_t qw, std::uintptr_t kw, std::uintptr_t cos_t, std::uintptr_t sin_t,
                std::uintptr_t q, std::uintptr_t k, std::uintptr_t v, int64_t items, int64_t tokens, int heads,
                int hd, float eps, int blocks, std::uintptr_t stream) {
  auto kernel = vectorised<T>(hd, {qkv, qw, kw, cos_t, sin_t, q, k, v}) ? qk_norm_rope_fwd_kernel<T, vec_width<T>()>
                                                                       : qk_norm_rope_fwd_kernel<T, 2>;
  DIP_LAUNCH(kernel, blocks, 32 * kWarps, 0, as_stream(stream))(
      reinterpret_cast<const T*>(qkv), reinterpret_cast<const float*>(qw), reinterpret_cast<const float*>(kw),
      reinterpret_cast<const float*>(cos_t), reinterpret_cast<const float*>(sin_t), reinterpret_cast<T*>(q),
      reinterpret_cast<T*>(k), reinterpret_cast<T*>(v), items, tokens, heads, hd, eps);
  check_launch("qk_norm_rope_fwd_kernel");
}

template <typename T>
void launch_bwd(std::uintptr_t dq, std::uintptr_t dk, std::uintptr_t dv, std::uintptr_t qkv, std::uintptr_t qw,
                std::uintptr_t kw, std::uintptr_t cos_t, std::uintptr_t sin_t, std::uintptr_t dqkv,
                std::uintptr_t parts, int64_t items, int64_t tokens, int heads, int hd, float eps,
                GradStrides sq, GradStrides sk, GradStrides sv, int blocks, std::uintptr_t stream) {
  const size_t smem = static_cast<size_t>(kWarps) * 2 * hd * sizeof(float);
  const bool vec = vectorised<T>(hd, {dq, dk, dv, qkv, qw, kw, cos_t, sin_t, dqkv}) &&
                   multiples_of(vec_width<T>(), {sq.b, sq.h, sq.t, sk.b, sk.h, sk.t, sv.b, sv.h, sv.t});
  auto kernel = vec ? qk_norm_rope_bwd_kernel<T, vec_width<T>()> : qk_norm_rope_bwd_kernel<T, 2>;
  DIP_LAUNCH(kernel, blocks, 32 * kWarps, smem, as_stream(stream))(
      reinterpret_cast<const T*>(dq), reinterpret_cast<const T*>(dk), reinterpret_cast<const T*>(dv),
      reinterpret_cast<const T*>(qkv), reinterpret_cast<const float*>(qw), reinterpret_cast<const float*>(kw),
      reinterpret_cast<const float*>(cos_t), reinterpret_cast<const float*>(sin_t), reinterpret_cast<T*>(dqkv),
      reinterpret_cast<float*>(parts), items, tokens, heads, hd, eps, sq, sk, sv);
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
                      float eps, int64_t sqb, int64_t sqh, int64_t sqt, int64_t skb, int64_t skh, int64_t skt,
                      int64_t svb, int64_t svh, int64_t svt, int blocks, std::uintptr_t stream) {
  DIP_DISPATCH(dtype, launch_bwd, dq, dk, dv, qkv, qw, kw, cos_t, sin_t, dqkv, parts, items, tokens, heads, hd, eps,
               GradStrides{sqb, sqh, sqt}, GradStrides{skb, skh, skt}, GradStrides{svb, svh, svt}, blocks, stream);
}

}  // namespace dip
