// Op E in CUDA: patchify and unpatchify between the (B, C, H, W) image and the (B·T, C, P, P) patch layout
// (docs/kernels.md §1 E; docs/model.md §2: patch vectors in (c, i, j) order, tokens row-major over the patch grid).
// One thread per 16-byte vector of the destination when the layouts allow (a patch row of P elements is whole
// vectors and contiguous in both), else per element; the source may have any strides, e.g. a channels_last patch
// tensor. 64-bit indices.
#include <cstdint>

#include "common.cuh"

namespace dip {
namespace {

// to_patches: dst (B·T, C, P, P) contiguous ← src image with strides (s0, s1, s2, s3) = (b, c, y, x).
// else:       dst (B, C, H, W) contiguous   ← src patches with strides (s0, s1, s2, s3) = (n, c, i, j).
// Each thread moves V consecutive destination elements; V > 1 needs s3 = 1 (V source elements adjacent too).
template <typename T, int V>
__global__ void patch_copy_kernel(const T* __restrict__ src, T* __restrict__ dst, int64_t total, int C, int64_t H,
                                  int64_t W, int P, int64_t s0, int64_t s1, int64_t s2, int64_t s3, int to_patches) {
  const int64_t gw = W / P, tokens = (H / P) * gw;
  for (int64_t o = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) * V; o < total;
       o += static_cast<int64_t>(gridDim.x) * blockDim.x * V) {
    int64_t from;
    if (to_patches) {  // o = ((n·C + c)·P + i)·P + j
      const int64_t j = o % P, i = (o / P) % P;
      const int64_t c = (o / (static_cast<int64_t>(P) * P)) % C;
      const int64_t n = o / (static_cast<int64_t>(P) * P * C);
      const int64_t b = n / tokens, y = ((n % tokens) / gw) * P + i, x = ((n % tokens) % gw) * P + j;
      from = b * s0 + c * s1 + y * s2 + x * s3;
    } else {  // o = ((b·C + c)·H + y)·W + x
      const int64_t x = o % W, y = (o / W) % H, c = (o / (W * H)) % C, b = o / (W * H * C);
      const int64_t n = b * tokens + (y / P) * gw + x / P;
      from = n * s0 + c * s1 + (y % P) * s2 + (x % P) * s3;
    }
    if constexpr (V > 1) {
      *reinterpret_cast<uint4*>(dst + o) = *reinterpret_cast<const uint4*>(src + from);
    } else {
      dst[o] = src[from];
    }
  }
}

template <typename T, int V>
void launch_v(std::uintptr_t src, std::uintptr_t dst, int64_t total, int C, int64_t H, int64_t W, int P, int64_t s0,
              int64_t s1, int64_t s2, int64_t s3, int to_patches, std::uintptr_t stream) {
  const int threads = 256;
  const int64_t blocks = (total / V + threads - 1) / threads;
  auto kernel = patch_copy_kernel<T, V>;
  DIP_LAUNCH(kernel, static_cast<unsigned>(blocks < 65535 * 32 ? blocks : 65535 * 32), threads, 0, as_stream(stream))(
      reinterpret_cast<const T*>(src), reinterpret_cast<T*>(dst), total, C, H, W, P, s0, s1, s2, s3, to_patches);
  check_launch("patch_copy_kernel");
}

// 16-byte moves when a patch row is whole vectors, the source's last stride is 1 and the rest align.
template <typename T>
void launch(std::uintptr_t src, std::uintptr_t dst, int64_t total, int C, int64_t H, int64_t W, int P, int64_t s0,
            int64_t s1, int64_t s2, int64_t s3, int to_patches, std::uintptr_t stream) {
  constexpr int V = vec_width<T>();
  const bool vec = s3 == 1 && aligned16({src, dst}) && multiples_of(V, {P, s0, s1, s2});
  (vec ? launch_v<T, V> : launch_v<T, 1>)(src, dst, total, C, H, W, P, s0, s1, s2, s3, to_patches, stream);
}

}  // namespace

void patch_copy(int dtype, std::uintptr_t src, std::uintptr_t dst, int64_t total, int C, int64_t H, int64_t W, int P,
                int64_t s0, int64_t s1, int64_t s2, int64_t s3, int to_patches, std::uintptr_t stream) {
  DIP_DISPATCH(dtype, launch, src, dst, total, C, H, W, P, s0, s1, s2, s3, to_patches, stream);
}

}  // namespace dip
