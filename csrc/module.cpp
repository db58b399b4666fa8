// pybind11 entry point of dip_kernels._cuda: torch-free, raw device pointers, sizes, strides, dtype codes and the
// CUDA stream come in as integers (docs/kernels.md §6). Runtime queries let Python fail cleanly without a GPU. Built
// with -DDIP_EMULATE it is dip_kernels._cuda_emulated: the same kernels on the host emulator (csrc/emulation.h).
#include <pybind11/pybind11.h>

#ifdef DIP_EMULATE
#include <dlfcn.h>
#endif

#include "common.cuh"
#include "ops.h"

namespace py = pybind11;

namespace {

#ifdef DIP_EMULATE
int device_count() { return 1; }  // the emulator: host memory, one "device"
int runtime_version() { return 0; }

void set_dry_run(bool on) {
  dip::emu::dry_run = on;
  dip::emu::recorded.clear();
}

// The launches recorded since the last call: {offset (of the kernel in this module's file, for its symbol), grid,
// block, shared}.
py::list take_launches() {
  py::list out;
  for (const auto& r : dip::emu::recorded) {
    Dl_info info{};
    const std::uintptr_t base =
        dladdr(reinterpret_cast<void*>(r.kernel), &info) ? reinterpret_cast<std::uintptr_t>(info.dli_fbase) : 0;
    py::dict d;
    d["offset"] = r.kernel - base;
    d["grid"] = py::make_tuple(r.grid.x, r.grid.y, r.grid.z);
    d["block"] = py::make_tuple(r.block.x, r.block.y, r.block.z);
    d["shared"] = r.shared;
    out.append(d);
  }
  dip::emu::recorded.clear();
  return out;
}
#define DIP_MODULE _cuda_emulated
#else
int device_count() {
  int n = 0;
  dip::check_cuda(cudaGetDeviceCount(&n), "cudaGetDeviceCount");
  return n;
}

int runtime_version() {
  int v = 0;
  dip::check_cuda(cudaRuntimeGetVersion(&v), "cudaRuntimeGetVersion");
  return v;
}
#define DIP_MODULE _cuda
#endif

}  // namespace

PYBIND11_MODULE(DIP_MODULE, m) {
  m.doc() = "dip CUDA kernels (torch-free): see csrc/ and dip_kernels/cuda_ext.py";
  m.def("device_count", &device_count, "Number of CUDA devices; raises RuntimeError naming the CUDA error.");
  m.def("runtime_version", &runtime_version, "CUDA runtime version the extension was built with.");
#ifdef DIP_EMULATE
  m.def("set_dry_run", &set_dry_run, "Record launches instead of running them (see csrc/emulation.h).");
  m.def("take_launches", &take_launches, "The launches recorded in a dry run since the last call.");
#endif
  m.def("block_boundary_fwd", &dip::block_boundary_fwd, "Op A forward (see csrc/block_boundary.cu).");
  m.def("block_boundary_bwd", &dip::block_boundary_bwd, "Op A backward (see csrc/block_boundary.cu).");
  m.def("final_context_fwd", &dip::final_context_fwd, "Op C forward (see csrc/final_context.cu).");
  m.def("final_context_bwd", &dip::final_context_bwd, "Op C backward (see csrc/final_context.cu).");
  m.def("patch_copy", &dip::patch_copy, "Op E: patchify / unpatchify (see csrc/patchify.cu).");
  m.def("qk_norm_rope_fwd", &dip::qk_norm_rope_fwd, "Op B forward (see csrc/qk_norm_rope.cu).");
  m.def("qk_norm_rope_bwd", &dip::qk_norm_rope_bwd, "Op B backward (see csrc/qk_norm_rope.cu).");
  m.def("stem_fwd", &dip::stem_fwd, "Detailer first conv + pool from the image (see csrc/detailer_ends.cu).");
  m.def("stem_bwd", &dip::stem_bwd, "Detailer first conv backward (see csrc/detailer_ends.cu).");
  m.def("output_fwd", &dip::output_fwd, "Detailer output conv into the image (see csrc/detailer_ends.cu).");
  m.def("output_bwd", &dip::output_bwd, "Detailer output conv backward (see csrc/detailer_ends.cu).");
}
