// bfloat16 prefill's matrix products on an AVX2 CPU (no native bfloat16 arithmetic):
// out[m, n] = bf16(sum_k x[m, k] * w[n, k] + bias[n]), every sum in float32, rounded once.
//
// torch's bfloat16 product there is several times slower than its float32 one, and widening the
// weights to float32 in memory first (fast_decode.upcast_linear) costs a write and a read of
// twice the weights' bytes. Here the weights are widened where a float32 product reads them
// anyway: a general matrix product packs each panel of kNr weight rows into a buffer that stays
// in the cache, transposed so that one k holds kNr consecutive values; packing from bfloat16 is
// the same work as packing from float32, over half the bytes. x (a few hundred rows) is widened
// once per call. The inner kernel keeps a kMr x kNr block of sums in 12 registers: per k, two
// vectors of the panel, kMr broadcasts of x, 2 kMr fused multiply-adds. The same product serves
// prefill on int8 weights (int8_weights.py): a panel packs int8 * its row's scale, the float32
// weights the int8 ones stand for, and the sums are stored as float32.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "gemv_isa.h"

namespace llmgen {

struct GemmArgs {
  const float* x;        // (m, k) float32, row-major
  const uint16_t* w;     // (n, k) bfloat16, row-major, or nullptr: w8
  const float* bias;     // (n,) float32, or nullptr
  uint16_t* out;         // (m, n) bfloat16, or nullptr: out32
  int64_t m, n, k;
  const int8_t* w8 = nullptr;   // (n, k) int8 weights, each row times scale[row] (int8_weights.py)
  const float* scale = nullptr;
  float* out32 = nullptr;       // (m, n) float32
};

// Weight (row, kk) as float32: bfloat16 widened, or int8 times its row's scale.
inline float weight_value(const GemmArgs& a, int64_t row, int64_t kk) {
  return a.w8 != nullptr ? static_cast<float>(a.w8[row * a.k + kk]) * a.scale[row] : bf16_to_float(a.w[row * a.k + kk]);
}

constexpr int64_t kMr = 6, kNr = 16;

#ifdef LLMGEN_X86
// panel[kk * kNr + j] = w[n0 + j, kk] as float32 for j < rows (rows <= kNr), zero beyond.
LLMGEN_AVX2 inline void pack_panel_avx2(const GemmArgs& a, int64_t n0, int64_t rows, float* panel) {
  const int64_t k = a.k, full = rows == kNr ? k - k % 8 : 0;
  for (int64_t k0 = 0; k0 < full; k0 += 8) {
    for (int64_t half = 0; half < 2; ++half) {  // rows n0 + 8 half .. + 8: an 8 x 8 transpose
      __m256 r[8];
      for (int i = 0; i < 8; ++i) {
        const int64_t row = n0 + 8 * half + i;
        if (a.w8 != nullptr) {
          const __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(a.w8 + row * k + k0));
          r[i] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)), _mm256_set1_ps(a.scale[row]));
        } else {
          const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a.w + row * k + k0));
          r[i] = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
        }
      }
      const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
      const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
      const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
      const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
      const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
      const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
      const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
      const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
      const __m256 c[8] = {_mm256_permute2f128_ps(s0, s4, 0x20), _mm256_permute2f128_ps(s1, s5, 0x20),
                           _mm256_permute2f128_ps(s2, s6, 0x20), _mm256_permute2f128_ps(s3, s7, 0x20),
                           _mm256_permute2f128_ps(s0, s4, 0x31), _mm256_permute2f128_ps(s1, s5, 0x31),
                           _mm256_permute2f128_ps(s2, s6, 0x31), _mm256_permute2f128_ps(s3, s7, 0x31)};
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(panel + (k0 + i) * kNr + 8 * half, c[i]);
    }
  }
  for (int64_t kk = full; kk < k; ++kk) {
    for (int64_t j = 0; j < kNr; ++j) panel[kk * kNr + j] = j < rows ? weight_value(a, n0 + j, kk) : 0.0f;
  }
}

// Eight float32 values rounded to bfloat16 as float_to_bf16 rounds one (to nearest even, NaN: 0x7FC0).
LLMGEN_AVX2 inline __m128i bf16_round8(__m256 v) {
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  __m256i up = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(0x7FFF)), odd), 16);
  up = _mm256_blendv_epi8(up, _mm256_set1_epi32(0x7FC0), _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
  return _mm_packus_epi32(_mm256_castsi256_si128(up), _mm256_extracti128_si256(up, 1));  // each < 65536: exact
}

// Rows m0 .. m0 + rows of out from their sums (two vectors a row): bias added, rounded once to
// bfloat16 (or stored as float32: out32). A full panel's 16 columns in vectors (one scalar
// rounding per output cost ~10 % of a bfloat16 prefill), a last partial one element by element.
LLMGEN_AVX2 inline void store_block(const GemmArgs& a, const __m256* acc, int rows, int64_t m0, int64_t n0,
                                    int64_t cols) {
  if (cols == kNr) {
    const __m256 b0 = a.bias != nullptr ? _mm256_loadu_ps(a.bias + n0) : _mm256_setzero_ps();
    const __m256 b1 = a.bias != nullptr ? _mm256_loadu_ps(a.bias + n0 + 8) : _mm256_setzero_ps();
    for (int i = 0; i < rows; ++i) {
      const __m256 v0 = _mm256_add_ps(acc[2 * i], b0), v1 = _mm256_add_ps(acc[2 * i + 1], b1);
      const int64_t at = (m0 + i) * a.n + n0;
      if (a.out32 != nullptr) {
        _mm256_storeu_ps(a.out32 + at, v0);
        _mm256_storeu_ps(a.out32 + at + 8, v1);
      } else {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(a.out + at), bf16_round8(v0));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(a.out + at + 8), bf16_round8(v1));
      }
    }
    return;
  }
  alignas(32) float sums[kNr];
  for (int i = 0; i < rows; ++i) {
    _mm256_store_ps(sums, acc[2 * i]);
    _mm256_store_ps(sums + 8, acc[2 * i + 1]);
    const int64_t at = (m0 + i) * a.n + n0;
    for (int64_t j = 0; j < cols; ++j) {
      const float value = sums[j] + (a.bias != nullptr ? a.bias[n0 + j] : 0.0f);
      if (a.out32 != nullptr) {
        a.out32[at + j] = value;
      } else {
        a.out[at + j] = float_to_bf16(value);
      }
    }
  }
}

// Rows m0 .. m0 + MR of x times the packed panel (columns n0 .. n0 + cols of out).
// (Named accumulators, not an array: GCC kept an array's copy in memory up to date at every k.)
template <int MR>
LLMGEN_AVX2 void block_avx2(const GemmArgs& a, const float* panel, int64_t m0, int64_t n0, int64_t cols) {
  const int64_t k = a.k;
  const float* x = a.x + m0 * k;
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
         c40 = c00, c41 = c00, c50 = c00, c51 = c00;
#define LLMGEN_ROW(I, C0, C1)                                 \
  if constexpr (MR > I) {                                     \
    const __m256 xv = _mm256_broadcast_ss(x + I * k + kk);    \
    C0 = _mm256_fmadd_ps(xv, b0, C0);                         \
    C1 = _mm256_fmadd_ps(xv, b1, C1);                         \
  }
  for (int64_t kk = 0; kk < k; ++kk, panel += kNr) {
    const __m256 b0 = _mm256_loadu_ps(panel), b1 = _mm256_loadu_ps(panel + 8);
    LLMGEN_ROW(0, c00, c01) LLMGEN_ROW(1, c10, c11) LLMGEN_ROW(2, c20, c21)
    LLMGEN_ROW(3, c30, c31) LLMGEN_ROW(4, c40, c41) LLMGEN_ROW(5, c50, c51)
  }
#undef LLMGEN_ROW
  const __m256 sums[12] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
  store_block(a, sums, MR, m0, n0, cols);
}

// Columns [n_begin, n_end) of out, every row of x: the columns' panels packed into `panels`
// (kNr * k floats each, n_end - n_begin <= kNr * panels' count, chosen to stay in the L2 cache),
// then each kMr rows of x (in the L1 cache) multiplied by every panel in turn.
LLMGEN_AVX2 inline void gemm_avx2(const GemmArgs& a, int64_t n_begin, int64_t n_end, float* panels) {
  const int64_t count = (n_end - n_begin + kNr - 1) / kNr;
  for (int64_t p = 0; p < count; ++p) {
    pack_panel_avx2(a, n_begin + p * kNr, std::min(kNr, n_end - n_begin - p * kNr), panels + p * kNr * a.k);
  }
  const auto run = [&](auto rows, int64_t m0) {
    for (int64_t p = 0; p < count; ++p) {
      const int64_t n0 = n_begin + p * kNr;
      block_avx2<decltype(rows)::value>(a, panels + p * kNr * a.k, m0, n0, std::min(kNr, n_end - n0));
    }
  };
  int64_t m0 = 0;
  for (; m0 + kMr <= a.m; m0 += kMr) run(std::integral_constant<int, kMr>(), m0);
  switch (a.m - m0) {
    case 1: run(std::integral_constant<int, 1>(), m0); break;
    case 2: run(std::integral_constant<int, 2>(), m0); break;
    case 3: run(std::integral_constant<int, 3>(), m0); break;
    case 4: run(std::integral_constant<int, 4>(), m0); break;
    case 5: run(std::integral_constant<int, 5>(), m0); break;
    default: break;
  }
}
#endif  // LLMGEN_X86

}  // namespace llmgen
