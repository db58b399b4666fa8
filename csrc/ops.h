// Host entry points of the dip CUDA kernels (bound in module.cpp). Pointers, sizes, strides, dtype codes and the
// stream arrive as integers from Python, which allocates every buffer.
#pragma once

#include <cstdint>

namespace dip {

void block_boundary_fwd(int dtype, std::uintptr_t x, std::uintptr_t br, std::uintptr_t gate, std::uintptr_t w,
                        std::uintptr_t shift, std::uintptr_t scale, std::uintptr_t r_out, std::uintptr_t h,
                        std::uintptr_t mean, std::uintptr_t rstd, int64_t rows, int64_t tokens, int D, int64_t s_gate,
                        int64_t s_shift, int64_t s_scale, float eps, int has_res, int has_w, int layer,
                        std::uintptr_t stream);

void block_boundary_bwd(int dtype, std::uintptr_t dh, std::uintptr_t dr, std::uintptr_t r, std::uintptr_t br,
                        std::uintptr_t gate, std::uintptr_t w, std::uintptr_t scale, std::uintptr_t mean,
                        std::uintptr_t rstd, std::uintptr_t dx, std::uintptr_t dbr, std::uintptr_t p_gate,
                        std::uintptr_t p_shift, std::uintptr_t p_scale, std::uintptr_t p_w, int64_t batch,
                        int64_t tokens, int D, int chunks, int64_t s_gate, int64_t s_scale, int has_res, int has_dr,
                        int has_w, int layer, std::uintptr_t stream);

void final_context_fwd(int dtype, std::uintptr_t x, std::uintptr_t br, std::uintptr_t gate, std::uintptr_t temb,
                       std::uintptr_t s, int64_t rows, int64_t tokens, int D, int64_t s_gate, int64_t s_temb,
                       std::uintptr_t stream);

void final_context_bwd(int dtype, std::uintptr_t ds, std::uintptr_t x, std::uintptr_t br, std::uintptr_t gate,
                       std::uintptr_t temb, std::uintptr_t dx, std::uintptr_t dbr, std::uintptr_t p_gate,
                       std::uintptr_t p_temb, int64_t batch, int64_t tokens, int D, int chunks, int64_t s_gate,
                       int64_t s_temb, int64_t s_ds, std::uintptr_t stream);

void patch_copy(int dtype, std::uintptr_t src, std::uintptr_t dst, int64_t total, int C, int64_t H, int64_t W, int P,
                int64_t s0, int64_t s1, int64_t s2, int64_t s3, int to_patches, std::uintptr_t stream);

void qk_norm_rope_fwd(int dtype, std::uintptr_t qkv, std::uintptr_t qw, std::uintptr_t kw, std::uintptr_t cos_t,
                      std::uintptr_t sin_t, std::uintptr_t q, std::uintptr_t k, std::uintptr_t v, int64_t items,
                      int64_t tokens, int heads, int hd, float eps, int blocks, std::uintptr_t stream);

void qk_norm_rope_bwd(int dtype, std::uintptr_t dq, std::uintptr_t dk, std::uintptr_t dv, std::uintptr_t qkv,
                      std::uintptr_t qw, std::uintptr_t kw, std::uintptr_t cos_t, std::uintptr_t sin_t,
                      std::uintptr_t dqkv, std::uintptr_t parts, int64_t items, int64_t tokens, int heads, int hd,
                      float eps, int64_t sqb, int64_t sqh, int64_t sqt, int64_t skb, int64_t skh, int64_t skt,
                      int64_t svb, int64_t svh, int64_t svt, int blocks, std::uintptr_t stream);

void stem_fwd(int dtype, std::uintptr_t img, int64_t tokens, int64_t grid_w, int64_t sb, int64_t sc, int64_t sh,
              int64_t sw, int P, std::uintptr_t w, std::uintptr_t bias, std::uintptr_t skip, std::uintptr_t pooled,
              std::uintptr_t pre, std::uintptr_t argmax, int64_t patches, int cin, int C, int blocks,
              std::uintptr_t stream);

void stem_bwd(int dtype, std::uintptr_t d_skip, int64_t ds_n, int64_t ds_c, int64_t ds_y, int64_t ds_x,
              std::uintptr_t d_pooled, int64_t dp_n, int64_t dp_c, int64_t dp_y, int64_t dp_x, std::uintptr_t argmax, std::uintptr_t pre, std::uintptr_t img,
              int64_t tokens, int64_t grid_w, int64_t sb, int64_t sc, int64_t sh, int64_t sw, int P,
              std::uintptr_t p_w, std::uintptr_t p_b, int64_t patches, int cin, int C, int blocks,
              std::uintptr_t stream);

void output_fwd(int dtype, std::uintptr_t y, int64_t ys_n, int64_t ys_c, int64_t ys_y, int64_t ys_x, std::uintptr_t w,
                std::uintptr_t bias, std::uintptr_t img, int64_t tokens, int64_t grid_w, int64_t sb, int64_t sc,
                int64_t sh, int64_t sw, int P, int64_t pixels, int C, int cout, std::uintptr_t stream);

void output_bwd(int dtype, std::uintptr_t d_img, int64_t tokens, int64_t grid_w, int64_t sb, int64_t sc, int64_t sh,
                int64_t sw, int P, std::uintptr_t y, int64_t ys_n, int64_t ys_c, int64_t ys_y, int64_t ys_x,
                std::uintptr_t w, std::uintptr_t dy, std::uintptr_t p_w, std::uintptr_t p_b, int64_t pixels, int C,
                int cout, int blocks, std::uintptr_t stream);

}  // namespace dip
