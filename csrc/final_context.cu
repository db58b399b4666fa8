// Op C in CUDA: s = SiLU(x + gate[b]·branch + t_emb[b]) (kernels.md §1 C; the Triton twin is
// dip_kernels/final_context_triton.py). Forward: one block per row. Backward: one block per (sample, token chunk)
// writing dx, dbranch and fp32 partial sums of dgate and dt_emb, summed deterministically by the caller.
#include <cstdint>

#include "common.cuh"

namespace dip {
namespace {

template <typename T>
__global__ void final_context_fwd_kernel(const T* __restrict__ x, const T* __restrict__ br, const T* __restrict__ gate,
                                         const T* __restrict__ temb, T* __restrict__ s, int64_t rows, int64_t tokens,
                                         int D, int64_t s_gate, int64_t s_temb) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t b = row / tokens, base = row * D;
    for (int c = threadIdx.x; c < D; c += blockDim.x) {
      const float z = to_float(x[base + c]) + to_float(gate[b * s_gate + c]) * to_float(br[base + c]) +
                      to_float(temb[b * s_temb + c]);
      s[base + c] = from_float<T>(z / (1.f + __expf(-z)));
    }
  }
}

template <typename T>
__global__ void final_context_bwd_kernel(const T* __restrict__ ds, const T* __restrict__ x, const T* __restrict__ br,
                                         const T* __restrict__ gate, const T* __restrict__ temb, T* __restrict__ dx,
                                         T* __restrict__ dbr, float* __restrict__ p_gate, float* __restrict__ p_temb,
                                         int64_t tokens, int D, int chunk, int64_t s_gate, int64_t s_temb) {
  const int64_t b = blockIdx.x;
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * chunk;
  const int64_t t1 = t0 + chunk < tokens ? t0 + chunk : tokens;
  const int64_t part = (b * gridDim.y + blockIdx.y) * D;
  for (int c = threadIdx.x; c < D; c += blockDim.x) {  // each thread owns its columns: no shared state
    const float g = to_float(gate[b * s_gate + c]), te = to_float(temb[b * s_temb + c]);
    float acc_gate = 0.f, acc_temb = 0.f;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i = (b * tokens + t) * D + c;
      const float branch = to_float(br[i]);
      const float z = to_float(x[i]) + g * branch + te;
      const float sig = 1.f / (1.f + __expf(-z));
      const float dz = to_float(ds[i]) * sig * (1.f + z * (1.f - sig));
      dx[i] = from_float<T>(dz);
      dbr[i] = from_float<T>(dz * g);
      acc_gate += dz * branch;
      acc_temb += dz;
    }
    p_gate[part + c] = acc_gate;
    p_temb[part + c] = acc_temb;
  }
}

template <typename T>
void launch_fwd(std::uintptr_t x, std::uintptr_t br, std::uintptr_t gate, std::uintptr_t temb, std::uintptr_t s,
                int64_t rows, int64_t tokens, int D, int64_t s_gate, int64_t s_temb, std::uintptr_t stream) {
  const int64_t grid = rows < 65535 * 8 ? rows : 65535 * 8;
  final_context_fwd_kernel<T><<<static_cast<unsigned>(grid), D >= 512 ? 256 : 128, 0, as_stream(stream)>>>(
      reinterpret_cast<const T*>(x), reinterpret_cast<const T*>(br), reinterpret_cast<const T*>(gate),
      reinterpret_cast<const T*>(temb), reinterpret_cast<T*>(s), rows, tokens, D, s_gate, s_temb);
  check_launch("final_context_fwd_kernel");
}

template <typename T>
void launch_bwd(std::uintptr_t ds, std::uintptr_t x, std::uintptr_t br, std::uintptr_t gate, std::uintptr_t temb,
                std::uintptr_t dx, std::uintptr_t dbr, std::uintptr_t p_gate, std::uintptr_t p_temb, int64_t batch,
                int64_t tokens, int D, int chunks, int64_t s_gate, int64_t s_temb, std::uintptr_t stream) {
  const int chunk = static_cast<int>((tokens + chunks - 1) / chunks);
  final_context_bwd_kernel<T><<<dim3(static_cast<unsigned>(batch), static_cast<unsigned>(chunks)), 128, 0,
                                as_stream(stream)>>>(
      reinterpret_cast<const T*>(ds), reinterpret_cast<const T*>(x), reinterpret_cast<const T*>(br),
      reinterpret_cast<const T*>(gate), reinterpret_cast<const T*>(temb), reinterpret_cast<T*>(dx),
      reinterpret_cast<T*>(dbr), reinterpret_cast<float*>(p_gate), reinterpret_cast<float*>(p_temb), tokens, D, chunk,
      s_gate, s_temb);
  check_launch("final_context_bwd_kernel");
}

}  // namespace

void final_context_fwd(int dtype, std::uintptr_t x, std::uintptr_t br, std::uintptr_t gate, std::uintptr_t temb,
                       std::uintptr_t s, int64_t rows, int64_t tokens, int D, int64_t s_gate, int64_t s_temb,
                       std::uintptr_t stream) {
  DIP_DISPATCH(dtype, launch_fwd, x, br, gate, temb, s, rows, tokens, D, s_gate, s_temb, stream);
}

void final_context_bwd(int dtype, std::uintptr_t ds, std::uintptr_t x, std::uintptr_t br, std::uintptr_t gate,
                       std::uintptr_t temb, std::uintptr_t dx, std::uintptr_t dbr, std::uintptr_t p_gate,
                       std::uintptr_t p_temb, int64_t batch, int64_t tokens, int D, int chunks, int64_t s_gate,
                       int64_t s_temb, std::uintptr_t stream) {
  DIP_DISPATCH(dtype, launch_bwd, ds, x, br, gate, temb, dx, dbr, p_gate, p_temb, batch, tokens, D, chunks, s_gate,
               s_temb, stream);
}

}  // namespace dip
