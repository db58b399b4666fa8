// Op C in CUDA: s = SiLU(x + gate[b]·branch + t_emb[b]) (docs/kernels.md §1 C; the Triton twin is
// dip_kernels/final_context/triton.py). Forward: one block per row. Backward: one block per (sample, token chunk)
// writing dx, dbranch and fp32 partial sums of dgate and dt_emb, summed deterministically by the caller. Global
// accesses move 16 bytes at a time when every pointer is aligned and D and the strides are multiples of the vector
// width; otherwise the same kernels run element by element.
#include <cstdint>

#include "common.cuh"

namespace dip {
namespace {

template <typename T, int V>
__global__ void final_context_fwd_kernel(const T* __restrict__ x, const T* __restrict__ br, const T* __restrict__ gate,
                                         const T* __restrict__ temb, T* __restrict__ s, int64_t rows, int64_t tokens,
                                         int D, int64_t s_gate, int64_t s_temb) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t b = row / tokens, base = row * D;
    for (int c = threadIdx.x * V; c < D; c += blockDim.x * V) {
      float z[V], g[V], branch[V], te[V];
      load_vec<V>(x + base + c, z);
      load_vec<V>(gate + b * s_gate + c, g);
      load_vec<V>(br + base + c, branch);
      load_vec<V>(temb + b * s_temb + c, te);
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const float v = z[i] + g[i] * branch[i] + te[i];
        z[i] = v / (1.f + __expf(-v));
      }
      store_vec<V>(s + base + c, z);
    }
  }
}

template <typename T, int V>
__global__ void final_context_bwd_kernel(const T* __restrict__ ds, const T* __restrict__ x, const T* __restrict__ br,
                                         const T* __restrict__ gate, const T* __restrict__ temb, T* __restrict__ dx,
                                         T* __restrict__ dbr, float* __restrict__ p_gate, float* __restrict__ p_temb,
                                         int64_t tokens, int D, int chunk, int64_t s_gate, int64_t s_temb,
                                         int64_t s_ds) {
  const int64_t b = blockIdx.x;
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * chunk;
  const int64_t t1 = t0 + chunk < tokens ? t0 + chunk : tokens;
  const int64_t part = (b * gridDim.y + blockIdx.y) * D;
  for (int c = threadIdx.x * V; c < D; c += blockDim.x * V) {  // each thread owns its columns: no shared state
    float g[V], te[V], acc_gate[V], acc_temb[V];
    load_vec<V>(gate + b * s_gate + c, g);
    load_vec<V>(temb + b * s_temb + c, te);
#pragma unroll
    for (int i = 0; i < V; ++i) acc_gate[i] = acc_temb[i] = 0.f;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t at = (b * tokens + t) * D + c;
      float branch[V], z[V], dz[V], dbranch[V];
      load_vec<V>(br + at, branch);
      load_vec<V>(x + at, z);
      load_vec<V>(ds + (b * tokens + t) * s_ds + c, dz);  // a row-strided gradient is read in place
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const float v = z[i] + g[i] * branch[i] + te[i];
        const float sig = 1.f / (1.f + __expf(-v));
        dz[i] *= sig * (1.f + v * (1.f - sig));
        dbranch[i] = dz[i] * g[i];
        acc_gate[i] += dz[i] * branch[i];
        acc_temb[i] += dz[i];
      }
      store_vec<V>(dx + at, dz);
      store_vec<V>(dbr + at, dbranch);
    }
    store_vec<V>(p_gate + part + c, acc_gate);
    store_vec<V>(p_temb + part + c, acc_temb);
  }
}

template <typename T, int V>
void launch_fwd_v(std::uintptr_t x, std::uintptr_t br, std::uintptr_t gate, std::uintptr_t temb, std::uintptr_t s,
                  int64_t rows, int64_t tokens, int D, int64_t s_gate, int64_t s_temb, std::uintptr_t stream) {
  const int64_t grid = rows < 65535 * 8 ? rows : 65535 * 8;
  auto kernel = final_context_fwd_kernel<T, V>;
  DIP_LAUNCH(kernel, static_cast<unsigned>(grid), row_threads(D, V), 0, as_stream(stream))(
      reinterpret_cast<const T*>(x), reinterpret_cast<const T*>(br), reinterpret_cast<const T*>(gate),
      reinterpret_cast<const T*>(temb), reinterpret_cast<T*>(s), rows, tokens, D, s_gate, s_temb);
  check_launch("final_context_fwd_kernel");
}

template <typename T>
void launch_fwd(std::uintptr_t x, std::uintptr_t br, std::uintptr_t gate, std::uintptr_t temb, std::uintptr_t s,
                int64_t rows, int64_t tokens, int D, int64_t s_gate, int64_t s_temb, std::uintptr_t stream) {
  constexpr int V = vec_width<T>();
  const bool vec = aligned16({x, br, gate, temb, s}) && multiples_of(V, {D, s_gate, s_temb});
  (vec ? launch_fwd_v<T, V> : launch_fwd_v<T, 1>)(x, br, gate, temb, s, rows, tokens, D, s_gate, s_temb, stream);
}

template <typename T, int V>
void launch_bwd_v(std::uintptr_t ds, std::uintptr_t x, std::uintptr_t br, std::uintptr_t gate, std::uintptr_t temb,
                  std::uintptr_t dx, std::uintptr_t dbr, std::uintptr_t p_gate, std::uintptr_t p_temb, int64_t batch,
                  int64_t tokens, int D, int chunks, int64_t s_gate, int64_t s_temb, int64_t s_ds,
                  std::uintptr_t stream) {
  const int chunk = static_cast<int>((tokens + chunks - 1) / chunks);
  const int threads = row_threads(D, V) < 256 ? row_threads(D, V) : 256;  // columns per thread loop beyond 256·V
  auto kernel = final_context_bwd_kernel<T, V>;
  DIP_LAUNCH(kernel, dim3(static_cast<unsigned>(batch), static_cast<unsigned>(chunks)), threads, 0,
             as_stream(stream))(
      reinterpret_cast<const T*>(ds), reinterpret_cast<const T*>(x), reinterpret_cast<const T*>(br),
      reinterpret_cast<const T*>(gate), reinterpret_cast<const T*>(temb), reinterpret_cast<T*>(dx),
      reinterpret_cast<T*>(dbr), reinterpret_cast<float*>(p_gate), reinterpret_cast<float*>(p_temb), tokens, D, chunk,
      s_gate, s_temb, s_ds);
  check_launch("final_context_bwd_kernel");
}

template <typename T>
void launch_bwd(std::uintptr_t ds, std::uintptr_t x, std::uintptr_t br, std::uintptr_t gate, std::uintptr_t temb,
                std::uintptr_t dx, std::uintptr_t dbr, std::uintptr_t p_gate, std::uintptr_t p_temb, int64_t batch,
                int64_t tokens, int D, int chunks, int64_t s_gate, int64_t s_temb, int64_t s_ds,
                std::uintptr_t stream) {
  constexpr int V = vec_width<T>();
  const bool vec =
      aligned16({ds, x, br, gate, temb, dx, dbr, p_gate, p_temb}) && multiples_of(V, {D, s_gate, s_temb, s_ds});
  (vec ? launch_bwd_v<T, V> : launch_bwd_v<T, 1>)(ds, x, br, gate, temb, dx, dbr, p_gate, p_temb, batch, tokens, D,
                                                  chunks, s_gate, s_temb, s_ds, stream);
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
                       int64_t s_temb, int64_t s_ds, std::uintptr_t stream) {
  DIP_DISPATCH(dtype, launch_bwd, ds, x, br, gate, temb, dx, dbr, p_gate, p_temb, batch, tokens, D, chunks, s_gate,
               s_temb, s_ds, stream);
}

}  // namespace dip
