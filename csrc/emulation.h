// A host emulation of the CUDA execution model for testing the kernels without a GPU (built as
// dip_kernels._cuda_emulated by setup.py with the host compiler and -DDIP_EMULATE; the CUDA twin of running Triton
// kernels under TRITON_INTERPRET=1).
//
// Every CUDA thread of a block is an OS thread; __syncthreads is a barrier over the block's threads, __syncwarp and
// __shfl_xor_sync act within each 32-thread warp through a barrier and an exchange buffer; blocks run one after
// another, so one static array per dynamic-shared-memory name (`smem`, `acc`) serves every block. A thread that
// returns leaves its barriers (arrive_and_drop), like an exited GPU thread. fp32 maths uses the host's libm
// (rsqrtf = 1/sqrtf, __expf = expf), so results match the GPU to rounding, not bitwise; the indexing, vector widths,
// alignment decisions, barriers and reductions are the real code's.
//
// Dry run (set_dry_run): launches are recorded — which kernel instantiation, grid, block, dynamic shared memory —
// and not run. The kernel report (benchmarks/tools/kernel_capture.py) uses it to count each instantiation the real
// launchers pick, by the same dtype, alignment and size decisions a GPU launch makes.
#pragma once

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

namespace dip {
namespace emu {

struct BlockState {
  std::unique_ptr<std::barrier<>> all;
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  float exchange[1024];
};

inline thread_local uint3 thread_index;
inline thread_local uint3 block_index;
inline thread_local BlockState* block_state = nullptr;
inline dim3 block_dim, grid_dim;  // of the running launch (launches never overlap)

struct Recorded {
  std::uintptr_t kernel;  // the instantiation's address
  dim3 grid, block;
  std::size_t shared;
};
inline bool dry_run = false;
inline std::vector<Recorded> recorded;  // the launches of a dry run, in order

inline void sync_block() { block_state->all->arrive_and_wait(); }
inline void sync_warp() { block_state->warps[thread_index.x / 32]->arrive_and_wait(); }

inline float shfl_xor(float v, int offset) {
  const unsigned t = thread_index.x;
  block_state->exchange[t] = v;
  sync_warp();
  const float other = block_state->exchange[(t & ~31u) | ((t & 31u) ^ static_cast<unsigned>(offset))];
  sync_warp();
  return other;
}

// DIP_LAUNCH(kernel, grid, block, shared bytes, stream)(args…): runs the grid block by block (1-D thread blocks),
// or, in a dry run, records it.
template <typename Kernel>
struct Launch {
  Kernel kernel;
  dim3 grid, block;
  std::size_t shared;

  template <typename... Args>
  void operator()(Args... args) const {
    if (dry_run) {
      recorded.push_back(Recorded{reinterpret_cast<std::uintptr_t>(kernel), grid, block, shared});
      return;
    }
    const unsigned n = block.x * block.y * block.z;
    block_dim = block;
    grid_dim = grid;
    for (unsigned z = 0; z < grid.z; ++z)
      for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x) run_block(n, uint3{x, y, z}, args...);
  }

  template <typename... Args>
  void run_block(unsigned n, uint3 where, Args... args) const {
    BlockState state;
    state.all = std::make_unique<std::barrier<>>(n);
    for (unsigned w = 0; w * 32 < n; ++w)
      state.warps.push_back(std::make_unique<std::barrier<>>(std::min(32u, n - 32 * w)));
    std::vector<std::thread> threads;
    threads.reserve(n);
    for (unsigned t = 0; t < n; ++t) {
      threads.emplace_back([&, t] {
        thread_index = uint3{t, 0, 0};
        block_index = where;
        block_state = &state;
        kernel(args...);
        state.warps[t / 32]->arrive_and_drop();
        state.all->arrive_and_drop();
      });
    }
    for (auto& thread : threads) thread.join();
  }
};

template <typename Kernel>
Launch<Kernel> launch(Kernel kernel, dim3 grid, dim3 block, std::size_t shared) {
  return Launch<Kernel>{kernel, grid, block, shared};
}

}  // namespace emu

namespace {
// the dynamic shared memory of the running block (one block at a time)
alignas(16) float smem[1 << 18];
alignas(16) float acc[1 << 18];
}  // namespace

}  // namespace dip

#define threadIdx (::dip::emu::thread_index)
#define blockIdx (::dip::emu::block_index)
#define blockDim (::dip::emu::block_dim)
#define gridDim (::dip::emu::grid_dim)
#define __syncthreads() ::dip::emu::sync_block()
#define __syncwarp() ::dip::emu::sync_warp()
#define __shfl_xor_sync(mask, v, offset) ::dip::emu::shfl_xor((v), (offset))
#define rsqrtf(x) (1.f / std::sqrt(static_cast<float>(x)))
#define __expf(x) std::exp(static_cast<float>(x))
#define cudaFuncSetAttribute(...) cudaSuccess
#define cudaGetLastError() cudaSuccess
#define cudaGetErrorName(err) "emulated"
#define cudaGetErrorString(err) "emulated"
#define DIP_LAUNCH(kernel, grid, block, shared, stream) \
  ::dip::emu::launch(kernel, dim3(grid), dim3(block), static_cast<std::size_t>(shared))
