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

template <typename T>
__global__ void stem_bwd_kernel(const T* __restrict__ d_skip, const T* __restrict__ d_pooled,
                                const int8_t* __restrict__ argmax, const T* __restrict__ pre,
                                const T* __restrict__ img, Image im, float* __restrict__ p_w,
                                float* __restrict__ p_b, int64_t patches, int cin, int C) {
  extern __shared__ float smem[];  // tile (cin·(P+2)²) + dpre of the patch (P²·C)
  const int P = im.P, half = P / 2, S = P + 2;
  float* tile = smem;
  float* dpre = smem + cin * S * S;
  // each thread owns weight-gradient entries e = threadIdx.x + k·blockDim.x of (C, cin, 9), plus bias entries
  float acc[32];
  const int mine = (C * cin * 9 + blockDim.x - 1) / blockDim.x;  // ≤ 32 for C·cin·9 ≤ 32·blockDim
  for (int k = 0; k < mine; ++k) acc[k] = 0.f;
  float acc_b = 0.f;
  for (int64_t n = blockIdx.x; n < patches; n += gridDim.x) {
    __syncthreads();
    load_tile(img, im, n, cin, tile);
    for (int e = threadIdx.x; e < P * P * C; e += blockDim.x) {
      const int co = e % C, p = e / C, y = p / P, x = p % P;
      const int64_t pix = (n * P + y) * P + x;
      float d = to_float(d_skip[pix * C + co]);
      const int64_t win = ((n * half + y / 2) * half + x / 2) * C + co;
      if (argmax[win] == (y % 2) * 2 + x % 2) d += to_float(d_pooled[win]);
      const float z = to_float(pre[pix * C + co]), sig = 1.f / (1.f + __expf(-z));
      dpre[p * C + co] = d * sig * (1.f + z * (1.f - sig));
    }
    __syncthreads();
    for (int k = 0; k < mine; ++k) {
      const int e = threadIdx.x + k * blockDim.x;
      if (e >= C * cin * 9) break;
      const int co = e / (cin * 9), ci = (e / 9) % cin, t = e % 9;
      float s = 0.f;
      for (int p = 0; p < P * P; ++p) s += dpre[p * C + co] * tile[(ci * S + p / P + t / 3) * S + p % P + t % 3];
      acc[k] += s;
    }
    if (threadIdx.x < C)
      for (int p = 0; p < P * P; ++p) acc_b += dpre[p * C + threadIdx.x];
  }
  for (int k = 0; k < mine; ++k) {
    const int e = threadIdx.x + k * blockDim.x;
    if (e < C * cin * 9) p_w[static_cast<int64_t>(blockIdx.x) * C * cin * 9 + e] = acc[k];
  }
  if (threadIdx.x < C) p_b[static_cast<int64_t>(blockIdx.x) * C + threadIdx.x] = acc_b;
}

template <typename T>
__global__ void output_fwd_kernel(const T* __restrict__ y, const float* __restrict__ w, const float* __restrict__ bias,
                                  T* __restrict__ img, Image im, int64_t pixels, int C, int cout) {
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < pixels;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = p / (im.P * im.P);
    const int i = static_cast<int>((p / im.P) % im.P), j = static_cast<int>(p % im.P);
    for (int o = 0; o < cout; ++o) {
      float s = bias[o];
      for (int c = 0; c < C; ++c) s += to_float(y[p * C + c]) * w[o * C + c];
      img[im.at(n, o, i, j)] = from_float<T>(s);
    }
  }
}

template <typename T>
__global__ void output_bwd_kernel(const T* __restrict__ d_img, Image im, const T* __restrict__ y,
                                  const float* __restrict__ w, T* __restrict__ dy, float* __restrict__ p_w,
                                  float* __restrict__ p_b, int64_t pixels, int C, int cout) {
  extern __shared__ float acc[];  // (cout, C + 1): weight and bias gradient sums of this block
  for (int e = threadIdx.x; e < cout * (C + 1); e += blockDim.x) acc[e] = 0.f;
  __syncthreads();
  // thread ↔ channel c of a run of pixels: coalesced over channels, one block-wide pass per pixel
  for (int64_t p = blockIdx.x; p < pixels; p += gridDim.x) {
    const int64_t n = p / (im.P * im.P);
    const int i = static_cast<int>((p / im.P) % im.P), j = static_cast<int>(p % im.P);
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
      float s = 0.f;
      const float yc = to_float(y[p * C + c]);
      for (int o = 0; o < cout; ++o) {
        const float g = to_float(d_img[im.at(n, o, i, j)]);
        s += g * w[o * C + c];
        acc[o * (C + 1) + c] += g * yc;
        if (c == 0) acc[o * (C + 1) + C] += g;
      }
      dy[p * C + c] = from_float<T>(s);
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < cout * (C + 1); e += blockDim.x) {
    const int o = e / (C + 1), c = e % (C + 1);
    if (c < C) p_w[static_cast<int64_t>(blockIdx.x) * cout * C + o * C + c] = acc[e];
    else p_b[static_cast<int64_t>(blockIdx.x) * cout + o] = acc[e];
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
void launch_stem_bwd(std::uintptr_t d_skip, std::uintptr_t d_pooled, std::uintptr_t argmax, std::uintptr_t pre,
                     std::uintptr_t img, Image im, std::uintptr_t p_w, std::uintptr_t p_b, int64_t patches, int cin,
                     int C, int blocks, std::uintptr_t stream) {
  if (C * cin * 9 > 32 * 256 || C > 256) throw std::invalid_argument("stem_bwd_kernel: at most 256 channels");
  const size_t smem = (cin * (im.P + 2) * (im.P + 2) + im.P * im.P * C) * sizeof(float);
  auto kernel = stem_bwd_kernel<T>;
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
             "stem_bwd_kernel (shared memory)");
  DIP_LAUNCH(kernel, blocks, 256, smem, as_stream(stream))(
      reinterpret_cast<const T*>(d_skip), reinterpret_cast<const T*>(d_pooled),
      reinterpret_cast<const int8_t*>(argmax), reinterpret_cast<const T*>(pre), reinterpret_cast<const T*>(img), im,
      reinterpret_cast<float*>(p_w), reinterpret_cast<float*>(p_b), patches, cin, C);
  check_launch("stem_bwd_kernel");
}

template <typename T>
void launch_output_fwd(std::uintptr_t y, std::uintptr_t w, std::uintptr_t bias, std::uintptr_t img, Image im,
                       int64_t pixels, int C, int cout, std::uintptr_t stream) {
  const int64_t blocks = (pixels + 255) / 256;
  auto kernel = output_fwd_kernel<T>;
  DIP_LAUNCH(kernel, static_cast<unsigned>(blocks < 65535 * 32 ? blocks : 65535 * 32), 256, 0, as_stream(stream))(
      reinterpret_cast<const T*>(y), reinterpret_cast<const float*>(w), reinterpret_cast<const float*>(bias),
      reinterpret_cast<T*>(img), im, pixels, C, cout);
  check_launch("output_fwd_kernel");
}

template <typename T>
void launch_output_bwd(std::uintptr_t d_img, Image im, std::uintptr_t y, std::uintptr_t w, std::uintptr_t dy,
                       std::uintptr_t p_w, std::uintptr_t p_b, int64_t pixels, int C, int cout, int blocks,
                       std::uintptr_t stream) {
  const size_t smem = cout * (C + 1) * sizeof(float);
  auto kernel = output_bwd_kernel<T>;
  DIP_LAUNCH(kernel, blocks, C >= 64 ? 64 : 32, smem, as_stream(stream))(
      reinterpret_cast<const T*>(d_img), im, reinterpret_cast<const T*>(y), reinterpret_cast<const float*>(w),
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

void stem_bwd(int dtype, std::uintptr_t d_skip, std::uintptr_t d_pooled, std::uintptr_t argmax, std::uintptr_t pre,
              std::uintptr_t img, int64_t tokens, int64_t grid_w, int64_t sb, int64_t sc, int64_t sh, int64_t sw,
              int P, std::uintptr_t p_w, std::uintptr_t p_b, int64_t patches, int cin, int C, int blocks,
              std::uintptr_t stream) {
  const Image im = make_image(tokens, grid_w, sb, sc, sh, sw, P);
  DIP_DISPATCH(dtype, launch_stem_bwd, d_skip, d_pooled, argmax, pre, img, im, p_w, p_b, patches, cin, C, blocks,
               stream);
}

void output_fwd(int dtype, std::uintptr_t y, std::uintptr_t w, std::uintptr_t bias, std::uintptr_t img,
                int64_t tokens, int64_t grid_w, int64_t sb, int64_t sc, int64_t sh, int64_t sw, int P, int64_t pixels,
                int C, int cout, std::uintptr_t stream) {
  const Image im = make_image(tokens, grid_w, sb, sc, sh, sw, P);
  DIP_DISPATCH(dtype, launch_output_fwd, y, w, bias, img, im, pixels, C, cout, stream);
}

void output_bwd(int dtype, std::uintptr_t d_img, int64_t tokens, int64_t grid_w, int64_t sb, int64_t sc, int64_t sh,
                int64_t sw, int P, std::uintptr_t y, std::uintptr_t w, std::uintptr_t dy, std::uintptr_t p_w,
                std::uintptr_t p_b, int64_t pixels, int C, int cout, int blocks, std::uintptr_t stream) {
  const Image im = make_image(tokens, grid_w, sb, sc, sh, sw, P);
  DIP_DISPATCH(dtype, launch_output_bwd, d_img, im, y, w, dy, p_w, p_b, pixels, C, cout, blocks, stream);
}

}  // namespace dip
