// Op E in CUDA: patchify and unpatchify between the (B, C, H, W) image and the (B·T, C, P, P) patch layout
// (kernels.md §1 E; dip-model.md §2: patch vectors in (c, i, j) order, tokens row-major over the patch grid).
// One thread per destination element (contiguous, coalesced stores); the source may have any strides, e.g. a
// channels_last patch tensor. 64-bit indices.
#include <cstdint>

#include "common.cuh"

namespace dip {
namespace {

// to_patches: dst (B·T, C, P, P) contiguous ← src image with strides (s0, s1, s2, s3) = (b, c, y, x).
// else:       dst (B, C, H, W) contiguous   ← src patches with strides (s0, s1, s2, s3) = (n, c, i, j).
template <typename T>
__global__ void patch_copy_kernel(const T* __restrict__ src, T* __restrict__ dst, int64_t total, int C, int64_t H,
                                  int64_t W, int P, int64_t s0, int64_t s1, int64_t s2, int64_t s3, int to_patches) {
  const int64_t gw = W / P, tokens = (H / P) * gw;
  for (int64_t o = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; o < total;
       o += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t b, c, y, x;
    if (to_patches) {  // o = ((n·C + c)·P + i)·P + j
      const int64_t j = o % P, i = (o / P) % P;
      c = (o / (static_cast<int64_t>(P) * P)) % C;
      const int64_t n = o / (static_cast<int64_t>(P) * P * C);
      b = n / tokens;
      y = ((n % tokens) / gw) * P + i;
      x = ((n % tokens) % gw) * P + j;
      dst[o] = src[b * s0 + c * s1 + y * s2 + x * s3];
    } else {  // o = ((b·C + c)·H + y)·W + x
      x = o % W;
      y = (o / W) % H;
      c = (o / (W * H)) % C;
      b = o / (W * H * C);
      const int64_t n = b * tokens + (y / P) * gw + x / P;
      dst[o] = src[n * s0 + c * s1 + (y % P) * s2 + (x % P) * s3];
    }
  }
}

template <typename T>
void launch(std::uintptr_t src, std::uintptr_t dst, int64_t total, int C, int64_t H, int64_t W, int P, int64_t s0,
            int64_t s1, int64_t s2, int64_t s3, int to_patches, std::uintptr_t stream) {
  const int threads = 256;
  const int64_t blocks = (total + threads - 1) / threads;
  patch_copy_kernel<T><<<static_cast<unsigned>(blocks < 65535 * 32 ? blocks : 65535 * 32), threads, 0,
                         as_stream(stream)>>>(reinterpret_cast<const T*>(src), reinterpret_cast<T*>(dst), total, C, H,
                                              W, P, s0, s1, s2, s3, to_patches);
  check_launch("patch_copy_kernel");
}

}  // namespace

void patch_copy(int dtype, std::uintptr_t src, std::uintptr_t dst, int64_t total, int C, int64_t H, int64_t W, int P,
                int64_t s0, int64_t s1, int64_t s2, int64_t s3, int to_patches, std::uintptr_t stream) {
  DIP_DISPATCH(dtype, launch, src, dst, total, C, H, W, P, s0, s1, s2, s3, to_patches, stream);
}

}  // namespace dip
