// Internal to engine/kernels/cpu: the per-ISA kernels behind
// kernels::MatMulInt4 (int4_matmul.h), each in a translation unit compiled
// for its ISA. Each computes whole outputs for a panel of weight rows and
// every batch row, in the order int4_matmul.h documents (MatMul's 16 lanes
// over the dequantized weights), so the paths agree bit for bit and the
// split into panels, tiles and threads never shows in the result.
//
// Like matmul_kernels.h: plain data and C functions only, so no inline
// template from an AVX-512 file can be picked by the linker for an AVX2 CPU.
// Scratch comes from the caller (matmul_int4.cc) for the same reason.
// Thread-safety: pure functions; single-threaded (the caller splits panels).
#pragma once

#include <cstdint>

namespace tandem::kernels::cpu {

// Weight rows a kernel may dequantize into scratch at once; the caller
// provides kInt4ScratchRows * padded_cols floats.
inline constexpr int64_t kInt4ScratchRows = 8;

struct Int4PanelArgs {
  const float* x;         // [m][k]
  int64_t m;
  int64_t k;              // the matrix's cols
  const uint8_t* packed;  // [nr][row_bytes]: this panel's rows (int4_matmul.h layout)
  int64_t row_bytes;      // padded_cols / 2
  const float* scales;    // [nr][num_groups]
  const uint8_t* zeros;   // [nr][num_groups]
  int64_t num_groups;
  int64_t group_size;     // a multiple of 32
  int64_t nr;             // weight rows in the panel
  int64_t rows_after;     // rows of the matrix after the panel (their codes follow
                          // `packed` contiguously): what the decode kernel may prefetch
  const float* bias;      // [nr] or null
  float* y;               // y[i][j] at y[i * ldy + j]
  int64_t ldy;
  float* scratch;         // kInt4ScratchRows * padded_cols floats, 64-byte aligned
};

void Int4PanelScalar(const Int4PanelArgs& a);
void Int4PanelAvx2(const Int4PanelArgs& a);
// Needs AVX-512 F/BW/VL/DQ.
void Int4PanelAvx512(const Int4PanelArgs& a);

}  // namespace tandem::kernels::cpu
