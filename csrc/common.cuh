// Shared helpers of the torch-free CUDA extension (kernels.md §6): launch-error checks that name the kernel,
// the dtype codes the Python wrappers pass, and stream handles taken as integers.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include <cuda_runtime.h>

namespace dip {

// dtype codes shared with dip_kernels/cuda_ext.py
enum DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
  }
}

// Call right after a launch: reports configuration errors and asynchronous faults seen so far, by kernel name.
inline void check_launch(const char* kernel) { check_cuda(cudaGetLastError(), kernel); }

inline cudaStream_t as_stream(std::uintptr_t handle) { return reinterpret_cast<cudaStream_t>(handle); }

}  // namespace dip
