// The Patch Detailer Head's two memory-bound ends in CUDA (docs/kernels.md §1 D, issue: "Also in CUDA"):
//
// stem:   the first conv (Cin → C, 3×3, + bias + SiLU) reading the noisy (B, Cin, H, W) image patch by patch, with the
//         2×2 max-pool as a second output; it stores the pre-activation and each window's argmax for the backward.
//         Backward: weight and bias gradients only (the noisy image needs none), as per-block fp32 partials.
// output: the output 1×1 conv (C → Cout) from channels_last (N, C, P, P) features straight into the velocity image.
//         Backward: the feature gradient and per-block fp32 partials of the weight and bias gradients.
// One block per patch (grid-stride over patches); every buffer is allocated by the caller; 64-bit offsets.
#include <cstdint>

#include "common.cuh"

namespace dip {
namespace {

struct Image {  // addressing of patch n's pixel (i, j), channel c in a (B, C, H, W) image with any strides
  int64_t tokens, grid_w, sb, sc, sh, sw;
  int P;
  __device__ int64_t at(int64_t n, int c, int i, int j) const {
    const int64_t b = n / tokens, tok = n % tokens;
    return b * sb + c * sc + ((tok / grid_w) * P + i) * sh + ((tok % grid_w) * P + j) * sw;
  }
};

// Patch tile with a zero border in shared memory: (Cin, P + 2, P + 2) fp32.
template <typename T>
__device__ void load_tile(const T* img, const Image& im, int64_t n, int cin, float* tile) {
  const int S = im.P + 2;
  for (int e = threadIdx.x; e < cin * S * S; e += blockDim.x) {
    const int c = e / (S * S), y = (e / S) % S - 1, x = e % S - 1;
    tile[e] = (y >= 0 && y < im.P && x >= 0 && x < im.P) ? to_float(img[im.at(n, c, y, x)]) : 0.f;
  }
}

template <typename T>
__global__ void stem_fwd_kernel(const T* __restrict__ img, Image im, const float* __restrict__ w,
                                const float* __restrict__ bias, T* __restrict__ skip, T* __restrict__ pooled,
                                T* __restrict__ pre, int8_t* __restrict__ argmax, int64_t patches, int cin, int C) {
  extern __shared__ float smem[];  // weights (C·cin·9) + tile (cin·(P+2)²)
  float* ws = smem;
  float* tile = smem + C * cin * 9;
  const int P = im.P, half = P / 2, S = P + 2;
  for (int e = threadIdx.x; e < C * cin * 9; e += blockDim.x) ws[e] = w[e];
  for (int64_t n = blockIdx.x; n < patches; n += gridDim.x) {
    __syncthreads();
    load_tile(img, im, n, cin, tile);
    __syncthreads();
    for (int e = threadIdx.x; e < half * half * C; e += blockDim.x) {  // (window, channel), channel fastest
      const int co = e % C, win = e / C, py = win / half, px = win % half;
      float best = -INFINITY;
      int first = 0;
      for (int sub = 0; sub < 4; ++sub) {
        const int y = 2 * py + sub / 2, x = 2 * px + sub % 2;
        float z = bias[co];
        for (int ci = 0; ci < cin; ++ci)
          for (int t = 0; t < 9; ++t) z += ws[(co * cin + ci) * 9 + t] * tile[(ci * S + y + t / 3) * S + x + t % 3];
        const int64_t pix = (n * P + y) * P + x;  // NHWC
        pre[pix * C + co] = from_float<T>(z);
        const float a = z / (1.f + __expf(-z));
        skip[pix * C + co] = from_float<T>(a);
        // the first maximum in window order, decided on fp32 values; a NaN is the maximum (as PyTorch)
        if (a > best || (a != a && best == best)) {  // a != a: NaN
          best = a;
          first = sub;
        }
      }
      const int64_t out = ((n * half + py) * half + px) * C + co;
      pooled[out] = from_float<T>(best);
      argmax[out] = static_cast<int8_t>(first);
    }
  }
}

struct Strides4 {  // element strides of an (N, C, S, S) gradient: any layout the autograd hands over
  int64_t sn, sc, sy, sx;
  __device__ int64_t at(int64_t n, int c, int y, int x) const { return n * sn + c * sc + y * sy + x * sx; }
};

// PER: weight-gradient entries a thread owns (C·cin·9 ≤ PER·blockDim); a compile-time bound keeps them in registers.
template <typename T, int PER>
__global__ void stem_bwd_kernel(const T* __restrict__ d_skip, Strides4 ds, const T* __restrict__ d_pooled,
                                Strides4 dp, const int8_t* __restrict__ argmax, const T* __restrict__ pre,
                                const T* __restrict__ img, Image im, float* __restrict__ p_w,
                                float* __restrict__ p_b, int64_t patches, int cin, int C) {
  extern __shared__ float smem[];  // tile (cin·(P+2)²) + dpre of the patch (P²·C)
  const int P = im.P, half = P / 2, S = P + 2;
  float* tile = smem;
  float* dpre = smem + cin * S * S;
  // each thread owns weight-gradient entries e = threadIdx.x + k·blockDim.x of (C, cin, 9), plus bias entries
  float acc[PER];
#pragma unroll
  for (int k = 0; k < PER; ++k) acc[k] = 0.f;
  float acc_b = 0.f;
  const int entries = C * cin * 9;
  for (int64_t n = blockIdx.x; n < patches; n += gridDim.x) {
    __syncthreads();
    load_tile(img, im, n, cin, tile);
    for (int e = threadIdx.x; e < P * P * C; e += blockDim.x) {  // channel fastest: NHWC and sliced NHWC coalesce
      const int co = e % C, p = e / C, y = p / P, x = p % P;
      const int64_t pix = (n * P + y) * P + x;
      float d = to_float(d_skip[ds.at(n, co, y, x)]);
      const int64_t win = ((n * half + y / 2) * half + x / 2) * C + co;
      if (argmax[win] == (y % 2) * 2 + x % 2) d += to_float(d_pooled[dp.at(n, co, y / 2, x / 2)]);
      const float z = to_float(pre[pix * C + co]), sig = 1.f / (1.f + __expf(-z));
      dpre[p * C + co] = d * sig * (1.f + z * (1.f - sig));
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < PER; ++k) {
      const int e = threadIdx.x + k * blockDim.x;
      if (e < entries) {
        const int co = e / (cin * 9), ci = (e / 9) % cin, t = e % 9;
        float s = 0.f;
        for (int p = 0; p < P * P; ++p) s += dpre[p * C + co] * tile[(ci * S + p / P + t / 3) * S + p % P + t % 3];
        acc[k] += s;
      }
    }
    if (threadIdx.x < C)
      for (int p = 0; p < P * P; ++p) acc_b += dpre[p * C + threadIdx.x];
  }
#pragma unroll
  for (int k = 0; k < PER; ++k) {
    const int e = threadIdx.x + k * blockDim.x;
    if (e < entries) p_w[static_cast<int64_t>(blockIdx.x) * entries + e] = acc[k];
  }
  if (threadIdx.x < C) p_b[static_cast<int64_t>(blockIdx.x) * C + threadIdx.x] = acc_b;
}

constexpr int kMaxOut = 4;  // output channels the output kernels keep in registers (RGB velocity: 3)

// Thread ↔ pixel: its C channels read V at a time (16-byte vectors when the features are NHWC-like and aligned, else
// one by one through their strides: NCHW features are then read coalesced across threads), the ≤ 4 outputs summed
// in registers and written to the image (adjacent threads: adjacent pixels of an image row).
template <typename T, int V>
__global__ void output_fwd_kernel(const T* __restrict__ y, Strides4 ys, const float* __restrict__ w,
                                  const float* __restrict__ bias, T* __restrict__ img, Image im, int64_t pixels, int C,
                                  int cout) {
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < pixels;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = p / (im.P * im.P);
    const int i = static_cast<int>((p / im.P) % im.P), j = static_cast<int>(p % im.P);
    float s[kMaxOut];
#pragma unroll
    for (int o = 0; o < kMaxOut; ++o) s[o] = o < cout ? bias[o] : 0.f;
    for (int c0 = 0; c0 < C; c0 += V) {
      float v[V];
      load_vec<V>(y + ys.at(n, c0, i, j), v);
#pragma unroll
      for (int o = 0; o < kMaxOut; ++o)
        if (o < cout)
#pragma unroll
          for (int k = 0; k < V; ++k) s[o] += v[k] * w[o * C + c0 + k];
    }
#pragma unroll
    for (int o = 0; o < kMaxOut; ++o)
      if (o < cout) img[im.at(n, o, i, j)] = from_float<T>(s[o]);
  }
}

// Thread ↔ (pixel, V channels): C / V threads per pixel, blockDim / (C / V) pixels per pass; dy stored V at a time,
// the weight and bias gradient sums kept in registers, then summed over the block's pixel slots in shared memory.
template <typename T, int V>
__global__ void output_bwd_kernel(const T* __restrict__ d_img, Image im, const T* __restrict__ y, Strides4 ys,
                                  const float* __restrict__ w, T* __restrict__ dy, float* __restrict__ p_w,
                                  float* __restrict__ p_b, int64_t pixels, int C, int cout) {
  extern __shared__ float acc[];  // (slots, cout·(C + 1)): each slot's weight and bias gradient sums
  const int groups = C / V, slots = blockDim.x / groups, entries = cout * (C + 1);
  const int g = threadIdx.x % groups, slot = threadIdx.x / groups;
  float aw[kMaxOut][V], ab[kMaxOut];
#pragma unroll
  for (int o = 0; o < kMaxOut; ++o) {
    ab[o] = 0.f;
#pragma unroll
    for (int k = 0; k < V; ++k) aw[o][k] = 0.f;
  }
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * slots + slot; p < pixels;
       p += static_cast<int64_t>(gridDim.x) * slots) {
    const int64_t n = p / (im.P * im.P);
    const int i = static_cast<int>((p / im.P) % im.P), j = static_cast<int>(p % im.P);
    float gv[kMaxOut], yv[V], s[V];
#pragma unroll
    for (int o = 0; o < kMaxOut; ++o) gv[o] = o < cout ? to_float(d_img[im.at(n, o, i, j)]) : 0.f;
    load_vec<V>(y + ys.at(n, g * V, i, j), yv);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      s[k] = 0.f;
#pragma unroll
      for (int o = 0; o < kMaxOut; ++o)
        if (o < cout) {
          s[k] += gv[o] * w[o * C + g * V + k];
          aw[o][k] += gv[o] * yv[k];
        }
    }
#pragma unroll
    for (int o = 0; o < kMaxOut; ++o) ab[o] += gv[o];
    store_vec<V>(dy + p * C + g * V, s);
  }
  float* mine = acc + static_cast<int64_t>(slot) * entries;
#pragma unroll
  for (int o = 0; o < kMaxOut; ++o)
    if (o < cout) {
#pragma unroll
      for (int k = 0; k < V; ++k) mine[o * (C + 1) + g * V + k] = aw[o][k];
      if (g == 0) mine[o * (C + 1) + C] = ab[o];
    }
  __syncthreads();
  for (int e = threadIdx.x; e < entries; e += blockDim.x) {
    float total = 0.f;
    for (int k = 0; k < slots; ++k) total += acc[static_cast<int64_t>(k) * entries + e];
    const int o = e / (C + 1), c = e % (C + 1);
    if (c < C) p_w[static_cast<int64_t>(blockIdx.x) * cout * C + o * C + c] = total;
    else p_b[static_cast<int64_t>(blockIdx.x) * cout + o] = total;
  }
}

Image make_image(int64_t tokens, int64_t grid_w, int64_t sb, int64_t sc, int64_t sh, int64_t sw, int P) {
  return Image{tokens, grid_w, sb, sc, sh, sw, P};
}

template <typename T>
void launch_stem_fwd(std::uintptr_t img, Image im, std::uintptr_t w, std::uintptr_t bias, std::uintptr_t skip,
                     std::uintptr_t pooled, std::uintptr_t pre, std::uintptr_t argmax, int64_t patches, int cin, int C,
                     int blocks, std::uintptr_t stream) {
  const size_t smem = (C * cin * 9 + cin * (im.P + 2) * (im.P + 2)) * sizeof(float);
  auto kernel = stem_fwd_kernel<T>;
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
             "stem_fwd_kernel (shared memory)");
  DIP_LAUNCH(kernel, blocks, 256, smem, as_stream(stream))(
      reinterpret_cast<const T*>(img), im, reinterpret_cast<const float*>(w), reinterpret_cast<const float*>(bias),
      reinterpret_cast<T*>(skip), reinterpret_cast<T*>(pooled), reinterpret_cast<T*>(pre),
      reinterpret_cast<int8_t*>(argmax), patches, cin, C);
  check_launch("stem_fwd_kernel");
}

template <typename T>
void launch_stem_bwd(std::uintptr_t d_skip, Strides4 ds, std::uintptr_t d_pooled, Strides4 dp, std::uintptr_t argmax,
                     std::uintptr_t pre, std::uintptr_t img, Image im, std::uintptr_t p_w, std::uintptr_t p_b,
                     int64_t patches, int cin, int C, int blocks, std::uintptr_t stream) {
  constexpr int threads = 256;
  if (C * cin * 9 > 32 * threads || C > threads) throw std::invalid_argument("stem_bwd_kernel: at most 256 channels");
  const size_t smem = (cin * (im.P + 2) * (im.P + 2) + im.P * im.P * C) * sizeof(float);
  auto kernel = C * cin * 9 <= 8 * threads ? stem_bwd_kernel<T, 8> : stem_bwd_kernel<T, 32>;
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
             "stem_bwd_kernel (shared memory)");
  DIP_LAUNCH(kernel, blocks, threads, smem, as_stream(stream))(
      reinterpret_cast<const T*>(d_skip), ds, reinterpret_cast<const T*>(d_pooled), dp,
      reinterpret_cast<const int8_t*>(argmax), reinterpret_cast<const T*>(pre), reinterpret_cast<const T*>(img), im,
      reinterpret_cast<float*>(p_w), reinterpret_cast<float*>(p_b), patches, cin, C);
  check_launch("stem_bwd_kernel");
}

// 16-byte vectors over the channels when the features are NHWC-like (unit channel stride, the other strides and C
// multiples of the vector width) and both feature buffers are aligned.
template <typename T>
bool output_vectors(std::uintptr_t y, Strides4 ys, std::uintptr_t dy, int C) {
  return ys.sc == 1 && multiples_of(vec_width<T>(), {C, ys.sn, ys.sy, ys.sx}) && aligned16({y, dy});
}

template <typename T>
void launch_output_fwd(std::uintptr_t y, Strides4 ys, std::uintptr_t w, std::uintptr_t bias, std::uintptr_t img,
                       Image im, int64_t pixels, int C, int cout, std::uintptr_t stream) {
  if (cout > kMaxOut) throw std::invalid_argument("output_fwd_kernel: at most 4 output channels");
  const int64_t blocks = (pixels + 255) / 256;
  auto kernel = output_vectors<T>(y, ys, 0, C) ? output_fwd_kernel<T, vec_width<T>()> : output_fwd_kernel<T, 1>;
  DIP_LAUNCH(kernel, static_cast<unsigned>(blocks < 65535 * 32 ? blocks : 65535 * 32), 256, 0, as_stream(stream))(
      reinterpret_cast<const T*>(y), ys, reinterpret_cast<const float*>(w), reinterpret_cast<const float*>(bias),
      reinterpret_cast<T*>(img), im, pixels, C, cout);
  check_launch("output_fwd_kernel");
}

template <typename T>
void launch_output_bwd(std::uintptr_t d_img, Image im, std::uintptr_t y, Strides4 ys, std::uintptr_t w, std::uintptr_t dy,
                       std::uintptr_t p_w, std::uintptr_t p_b, int64_t pixels, int C, int cout, int blocks,
                       std::uintptr_t stream) {
  if (cout > kMaxOut) throw std::invalid_argument("output_bwd_kernel: at most 4 output channels");
  const bool vectors = output_vectors<T>(y, ys, dy, C);
  const int V = vectors ? vec_width<T>() : 1, groups = C / V;
  if (groups > 256) throw std::invalid_argument("output_bwd_kernel: at most 256 channel groups");
  const int slots = 256 / groups;
  const size_t smem = static_cast<size_t>(slots) * cout * (C + 1) * sizeof(float);
  auto kernel = vectors ? output_bwd_kernel<T, vec_width<T>()> : output_bwd_kernel<T, 1>;
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
             "output_bwd_kernel (shared memory)");
  DIP_LAUNCH(kernel, blocks, slots * groups, smem, as_stream(stream))(
      reinterpret_cast<const T*>(d_img), im, reinterpret_cast<const T*>(y), ys, reinterpret_cast<const float*>(w),
      reinterpret_cast<T*>(dy), reinterpret_cast<float*>(p_w), reinterpret_cast<float*>(p_b), pixels, C, cout);
  check_launch("output_bwd_kernel");
}

}  // namespace

void stem_fwd(int dtype, std::uintptr_t img, int64_t tokens, int64_t grid_w, int64_t sb, int64_t sc, int64_t sh,
              int64_t sw, int P, std::uintptr_t w, std::uintptr_t bias, std::uintptr_t skip, std::uintptr_t pooled,
              std::uintptr_t pre, std::uintptr_t argmax, int64_t patches, int cin, int C, int blocks,
              std::uintptr_t stream) {
  const Image im = make_image(tokens, grid_w, sb, sc, sh, sw, P);
  DIP_DISPATCH(dtype, launch_stem_fwd, img, im, w, bias, skip, pooled, pre, argmax, patches, cin, C, blocks, stream);
}

void stem_bwd(int dtype, std::uintptr_t d_skip, int64_t ds_n, int64_t ds_c, int64_t ds_y, int64_t ds_x,
              std::uintptr_t d_pooled, int64_t dp_n, int64_t dp_c, int64_t dp_y, int64_t dp_x, std::uintptr_t argmax, std::uintptr_t pre, std::uintptr_t img,
              int64_t tokens, int64_t grid_w, int64_t sb, int64_t sc, int64_t sh, int64_t sw, int P,
              std::uintptr_t p_w, std::uintptr_t p_b, int64_t patches, int cin, int C, int blocks,
              std::uintptr_t stream) {
  const Image im = make_image(tokens, grid_w, sb, sc, sh, sw, P);
  const Strides4 ds{ds_n, ds_c, ds_y, ds_x}, dp{dp_n, dp_c, dp_y, dp_x};
  DIP_DISPATCH(dtype, launch_stem_bwd, d_skip, ds, d_pooled, dp, argmax, pre, img, im, p_w, p_b, patches, cin, C,
               blocks, stream);
}

void output_fwd(int dtype, std::uintptr_t y, int64_t ys_n, int64_t ys_c, int64_t ys_y, int64_t ys_x, std::uintptr_t w,
                std::uintptr_t bias, std::uintptr_t img, int64_t tokens, int64_t grid_w, int64_t sb, int64_t sc,
                int64_t sh, int64_t sw, int P, int64_t pixels, int C, int cout, std::uintptr_t stream) {
  const Image im = make_image(tokens, grid_w, sb, sc, sh, sw, P);
  const Strides4 ys{ys_n, ys_c, ys_y, ys_x};
  DIP_DISPATCH(dtype, launch_output_fwd, y, ys, w, bias, img, im, pixels, C, cout, stream);
}

void output_bwd(int dtype, std::uintptr_t d_img, int64_t tokens, int64_t grid_w, int64_t sb, int64_t sc, int64_t sh,
                int64_t sw, int P, std::uintptr_t y, int64_t ys_n, int64_t ys_c, int64_t ys_y, int64_t ys_x,
                std::uintptr_t w, std::uintptr_t dy, std::uintptr_t p_w, std::uintptr_t p_b, int64_t pixels, int C,
                int cout, int blocks, std::uintptr_t stream) {
  const Image im = make_image(tokens, grid_w, sb, sc, sh, sw, P);
  const Strides4 ys{ys_n, ys_c, ys_y, ys_x};
  DIP_DISPATCH(dtype, launch_output_bwd, d_img, im, y, ys, w, dy, p_w, p_b, pixels, C, cout, blocks, stream);
}

}  // namespace dip
