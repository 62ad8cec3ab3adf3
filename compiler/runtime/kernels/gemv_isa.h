// The row kernels of gemv.cpp, one per instruction-set level, all compiled in one build: each
// x86 function carries its own target attribute, so the build needs no -march flag and the
// choice is made at run time (gemv.cpp: cpu_level, from cpuid). The portable level has none.
//
// A call computes rows [begin, end) of out[b, r] = sum_k x[b, k] * w[r, k] (+ bias[r]) for the
// `batch` rows of x, every sum in float32. Weights are read once per call.
//
// bfloat16 weights become float32 by a 16-bit shift (bfloat16 is the upper half of a float32),
// except on AVX512_BF16, whose instruction multiplies bfloat16 pairs itself. For the shift
// kernels x arrives in float32, already rearranged (gemv.cpp: prepare_x) so that a vector of
// 2n bfloat16 weights pairs with two float32 vectors of x: its even-indexed elements (the
// weights' low halves shifted up) and its odd ones (the high halves, masked).
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#define LLMGEN_X86 1
#include <immintrin.h>
#endif

namespace llmgen {

struct Args {
  const void* x;      // float32 (prepared) or, for AVX512_BF16, the bfloat16 rows themselves
  const void* w;      // (rows, in) float32 or bfloat16
  const float* bias;  // (rows,) float32, or nullptr
  float* out;         // (batch, rows) float32, or nullptr: out16
  uint16_t* out16;    // (batch, rows) bfloat16 (each sum rounded once), when out is nullptr
  int64_t batch, rows, in;
  const float* scale = nullptr;  // int8 weights: (rows,) float32, each row's sum multiplied by it
};

inline float bf16_to_float(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &wide, sizeof value);
  return value;
}

// float32 to bfloat16, rounded to the nearest even value (NaN: 0x7FC0), as torch's conversion.
inline uint16_t float_to_bf16(float value) {
  if (value != value) return 0x7FC0;
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return static_cast<uint16_t>((bits + ((bits >> 16) & 1) + 0x7FFFu) >> 16);
}

#if defined(__GNUC__)
#define LLMGEN_ALWAYS_INLINE __attribute__((always_inline))  // store, and the kernels' step lambdas
#else
#define LLMGEN_ALWAYS_INLINE
#endif

// One sum of a row kernel into its output (once per weight row and row of x: inlined, measured
// ~3 % of a bfloat16 step as a call).
LLMGEN_ALWAYS_INLINE inline void store(const Args& a, int64_t b, int64_t r, float sum) {
  const float value = (a.scale != nullptr ? sum * a.scale[r] : sum) + (a.bias != nullptr ? a.bias[r] : 0.0f);
  if (a.out != nullptr) {
    a.out[b * a.rows + r] = value;
  } else {
    a.out16[b * a.rows + r] = float_to_bf16(value);
  }
}

// ---- portable: plain C++, 16 independent sums that the compiler may vectorise (SSE2 at least)
template <bool kBf16>
void rows_scalar(const Args& a, int64_t begin, int64_t end) {
  const float* x = static_cast<const float*>(a.x);
  for (int64_t r = begin; r < end; ++r) {
    for (int64_t b = 0; b < a.batch; ++b) {
      const float* xb = x + b * a.in;
      float acc[16] = {};
      int64_t k = 0;
      for (; k + 16 <= a.in; k += 16) {
        for (int j = 0; j < 16; ++j) {
          const float weight = kBf16 ? bf16_to_float(static_cast<const uint16_t*>(a.w)[r * a.in + k + j])
                                     : static_cast<const float*>(a.w)[r * a.in + k + j];
          acc[j] += weight * xb[k + j];
        }
      }
      float sum = 0.0f;
      for (int j = 0; j < 16; ++j) sum += acc[j];
      for (; k < a.in; ++k) {
        const float weight = kBf16 ? bf16_to_float(static_cast<const uint16_t*>(a.w)[r * a.in + k])
                                   : static_cast<const float*>(a.w)[r * a.in + k];
        sum += weight * xb[k];
      }
      store(a, b, r, sum);
    }
  }
}

// int8 weights (one scale per row, Args::scale), float32 x, plain C++.
inline void rows_int8_scalar(const Args& a, int64_t begin, int64_t end) {
  const float* x = static_cast<const float*>(a.x);
  for (int64_t r = begin; r < end; ++r) {
    const int8_t* w = static_cast<const int8_t*>(a.w) + r * a.in;
    for (int64_t b = 0; b < a.batch; ++b) {
      const float* xb = x + b * a.in;
      float acc[16] = {};
      int64_t k = 0;
      for (; k + 16 <= a.in; k += 16) {
        for (int j = 0; j < 16; ++j) acc[j] += static_cast<float>(w[k + j]) * xb[k + j];
      }
      float sum = 0.0f;
      for (int j = 0; j < 16; ++j) sum += acc[j];
      for (; k < a.in; ++k) sum += static_cast<float>(w[k]) * xb[k];
      store(a, b, r, sum);
    }
  }
}

#ifdef LLMGEN_X86

// One weight row at a time, streamed once and multiplied by B rows of x (1..kMaxBatch) while
// its current block is in registers; two accumulators per x row (two vectors of a step, or the
// even and odd halves of a bfloat16 vector) keep the FMA latency out of the way, four (two steps
// at a time) for bfloat16 and B <= 2: a step of bfloat16 is half the bytes of a float32 one, and
// two chains of fused multiply-adds (4 cycles each) held one row of x to ~8 bytes a cycle.
// (Several weight rows at a time read the memory slower on a machine measured: more streams.)
// PREFETCH: bytes ahead of the bfloat16 weights to prefetch, one cache line in each 64 bytes (0:
// none). Each byte of bfloat16 takes twice the instructions of float32 (the shift and the mask),
// so the out-of-order window holds half as many pending loads ahead; one thread then read
// bfloat16 weights ~15 % slower than float32 ones from memory (AVX2, Zen 3). Prefetching 1 KiB
// ahead: 16.9 -> 19.3 GB/s on one thread, 28.5 -> 30.6 on two (float32: no gain, so none).
#define LLMGEN_ROW_KERNEL(NAME, TARGET, VEC, ZERO, LOADPS, LOADSI, SLLI, AND, SET1, CASTPS, FMADD, ADD, HSUM, LANES, \
                          PREFETCH)                                                                             \
  template <int B, bool kBf16>                                                                                  \
  TARGET void NAME(const Args& a, int64_t r, int64_t b0) {                                                      \
    constexpr int64_t kStep = 2 * LANES;                                                                        \
    constexpr int kUnroll = kBf16 && B <= 2 ? 2 : 1;                                                            \
    const int64_t full = a.in - a.in % kStep, pairs = kUnroll == 1 ? 0 : full - full % (kUnroll * kStep);       \
    const float* x = static_cast<const float*>(a.x) + b0 * a.in;                                               \
    VEC acc[B][2 * kUnroll];                                                                                    \
    for (int b = 0; b < B; ++b)                                                                                 \
      for (int u = 0; u < 2 * kUnroll; ++u) acc[b][u] = ZERO();                                                 \
    const auto step = [&](int64_t k, int u) TARGET LLMGEN_ALWAYS_INLINE {                                            \
      VEC lo, hi;                                                                                               \
      if constexpr (kBf16) {                                                                                    \
        const uint16_t* at = static_cast<const uint16_t*>(a.w) + r * a.in + k;                                  \
        if (PREFETCH > 0 && k % 32 == 0)                                                                        \
          _mm_prefetch(reinterpret_cast<const char*>(at) + PREFETCH, _MM_HINT_T0);                              \
        auto v = LOADSI(at);                                                                                    \
        asm("" : "+x"(v)); /* one load: the compiler would read the weights again for the AND */               \
        lo = CASTPS(SLLI(v, 16));                                                                               \
        hi = CASTPS(AND(v, SET1(static_cast<int>(0xFFFF0000u))));                                              \
      } else {                                                                                                  \
        lo = LOADPS(static_cast<const float*>(a.w) + r * a.in + k);                                            \
        hi = LOADPS(static_cast<const float*>(a.w) + r * a.in + k + LANES);                                    \
      }                                                                                                         \
      for (int b = 0; b < B; ++b) {                                                                             \
        acc[b][2 * u] = FMADD(lo, LOADPS(x + b * a.in + k), acc[b][2 * u]);                                    \
        acc[b][2 * u + 1] = FMADD(hi, LOADPS(x + b * a.in + k + LANES), acc[b][2 * u + 1]);                    \
      }                                                                                                         \
    };                                                                                                          \
    int64_t k = 0;                                                                                              \
    for (; k < pairs; k += kUnroll * kStep)                                                                     \
      for (int u = 0; u < kUnroll; ++u) step(k + u * kStep, u);                                                 \
    for (; k < full; k += kStep) step(k, 0);                                                                    \
    for (int b = 0; b < B; ++b) {                                                                               \
      VEC total = ADD(acc[b][0], acc[b][1]);                                                                    \
      for (int u = 2; u < 2 * kUnroll; ++u) total = ADD(total, acc[b][u]);                                      \
      float sum = HSUM(total);                                                                                  \
      for (k = full; k < a.in; ++k) sum += weight_at<kBf16>(a, r * a.in + k) * x[b * a.in + k];                \
      store(a, b0 + b, r, sum);                                                                                 \
    }                                                                                                           \
  }

template <bool kBf16>
inline float weight_at(const Args& a, int64_t at) {
  return kBf16 ? bf16_to_float(static_cast<const uint16_t*>(a.w)[at]) : static_cast<const float*>(a.w)[at];
}

// Rows [begin, end) for every row of x, kMaxBatch rows of x at a time.
#define LLMGEN_ROWS(NAME, ROW, TARGET)                                           \
  template <bool kBf16>                                                          \
  TARGET void NAME(const Args& a, int64_t begin, int64_t end) {                  \
    for (int64_t r = begin; r < end; ++r) {                                      \
      for (int64_t b0 = 0; b0 < a.batch; b0 += kMaxBatch) {                      \
        switch (a.batch - b0 < kMaxBatch ? a.batch - b0 : kMaxBatch) {           \
          case 1: ROW<1, kBf16>(a, r, b0); break;                                \
          case 2: ROW<2, kBf16>(a, r, b0); break;                                \
          case 3: ROW<3, kBf16>(a, r, b0); break;                                \
          default: ROW<4, kBf16>(a, r, b0); break;                               \
        }                                                                        \
      }                                                                          \
    }                                                                            \
  }

constexpr int64_t kMaxBatch = 4;

// ---- AVX2 + FMA: 8 float32 lanes, 16 weights a step
#define LLMGEN_AVX2 __attribute__((target("avx2,fma")))

LLMGEN_AVX2 inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
LLMGEN_AVX2 inline __m256i load256(const uint16_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

LLMGEN_ROW_KERNEL(row_avx2, LLMGEN_AVX2, __m256, _mm256_setzero_ps, _mm256_loadu_ps, load256, _mm256_slli_epi32,
                  _mm256_and_si256, _mm256_set1_epi32, _mm256_castsi256_ps, _mm256_fmadd_ps, _mm256_add_ps, hsum256, 8, 1024)
LLMGEN_ROWS(rows_avx2, row_avx2, LLMGEN_AVX2)

// ---- int8 weights (one float32 scale per row, Args::scale), float32 x: each weight widened to
// float32 (exact) and multiplied in float32; the row's sum times its scale. AVX2 + FMA: 16
// weights a step, two steps at a time for B <= 2 (as the bfloat16 kernel, for the same reason).
template <int B, bool kUnused>
LLMGEN_AVX2 void row_int8_avx2(const Args& a, int64_t r, int64_t b0) {
  constexpr int kUnroll = B <= 2 ? 2 : 1;
  const int8_t* w = static_cast<const int8_t*>(a.w) + r * a.in;
  const float* x = static_cast<const float*>(a.x) + b0 * a.in;
  const int64_t full = a.in - a.in % 16, pairs = full - full % (16 * kUnroll);
  __m256 acc[B][2 * kUnroll];
  for (int b = 0; b < B; ++b)
    for (int u = 0; u < 2 * kUnroll; ++u) acc[b][u] = _mm256_setzero_ps();
  const auto step = [&](int64_t k, int u) LLMGEN_AVX2 LLMGEN_ALWAYS_INLINE {
    // two 8-byte loads that the sign extension reads itself (no shuffle for the upper half)
    const __m256 lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w + k))));
    const __m256 hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w + k + 8))));
    for (int b = 0; b < B; ++b) {
      acc[b][2 * u] = _mm256_fmadd_ps(lo, _mm256_loadu_ps(x + b * a.in + k), acc[b][2 * u]);
      acc[b][2 * u + 1] = _mm256_fmadd_ps(hi, _mm256_loadu_ps(x + b * a.in + k + 8), acc[b][2 * u + 1]);
    }
  };
  int64_t k = 0;
  for (; k < pairs; k += 16 * kUnroll)
    for (int u = 0; u < kUnroll; ++u) step(k + 16 * u, u);
  for (; k < full; k += 16) step(k, 0);
  for (int b = 0; b < B; ++b) {
    __m256 total = _mm256_add_ps(acc[b][0], acc[b][1]);
    for (int u = 2; u < 2 * kUnroll; ++u) total = _mm256_add_ps(total, acc[b][u]);
    float sum = hsum256(total);
    for (k = full; k < a.in; ++k) sum += static_cast<float>(w[k]) * x[b * a.in + k];
    store(a, b0 + b, r, sum);
  }
}
LLMGEN_ROWS(rows_int8_avx2_t, row_int8_avx2, LLMGEN_AVX2)
LLMGEN_AVX2 inline void rows_int8_avx2(const Args& a, int64_t begin, int64_t end) { rows_int8_avx2_t<true>(a, begin, end); }

// ---- AVX-512F: 16 float32 lanes, 32 weights a step
#define LLMGEN_AVX512 __attribute__((target("avx512f")))

LLMGEN_AVX512 inline __m512i load512(const uint16_t* p) { return _mm512_loadu_si512(p); }
LLMGEN_AVX512 inline float hsum512(__m512 v) { return _mm512_reduce_add_ps(v); }

LLMGEN_ROW_KERNEL(row_avx512, LLMGEN_AVX512, __m512, _mm512_setzero_ps, _mm512_loadu_ps, load512, _mm512_slli_epi32,
                  _mm512_and_si512, _mm512_set1_epi32, _mm512_castsi512_ps, _mm512_fmadd_ps, _mm512_add_ps, hsum512, 16, 0)
LLMGEN_ROWS(rows_avx512, row_avx512, LLMGEN_AVX512)

// ---- AVX512_BF16: 32 bfloat16 pairs multiplied and added into float32 per instruction; x
// stays bfloat16. 64 weights a step in two accumulators, then one 32-weight step, then scalar.
#define LLMGEN_AVX512BF16 __attribute__((target("avx512f,avx512bf16")))

template <int B, bool kUnused>
LLMGEN_AVX512BF16 void row_avx512bf16(const Args& a, int64_t r, int64_t b0) {
  const auto* w = static_cast<const uint16_t*>(a.w) + r * a.in;
  const auto* x = static_cast<const uint16_t*>(a.x) + b0 * a.in;
  const int64_t full = a.in - a.in % 32;
  __m512 acc[B][2];
  for (int b = 0; b < B; ++b) acc[b][0] = acc[b][1] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 64 <= full; k += 64) {
    const __m512i lo = _mm512_loadu_si512(w + k), hi = _mm512_loadu_si512(w + k + 32);
    for (int b = 0; b < B; ++b) {
      acc[b][0] = _mm512_dpbf16_ps(acc[b][0], (__m512bh)lo, (__m512bh)_mm512_loadu_si512(x + b * a.in + k));
      acc[b][1] = _mm512_dpbf16_ps(acc[b][1], (__m512bh)hi, (__m512bh)_mm512_loadu_si512(x + b * a.in + k + 32));
    }
  }
  if (k < full) {
    const __m512i lo = _mm512_loadu_si512(w + k);
    for (int b = 0; b < B; ++b) {
      acc[b][0] = _mm512_dpbf16_ps(acc[b][0], (__m512bh)lo, (__m512bh)_mm512_loadu_si512(x + b * a.in + k));
    }
  }
  for (int b = 0; b < B; ++b) {
    float sum = _mm512_reduce_add_ps(_mm512_add_ps(acc[b][0], acc[b][1]));
    for (k = full; k < a.in; ++k) sum += bf16_to_float(w[k]) * bf16_to_float(x[b * a.in + k]);
    store(a, b0 + b, r, sum);
  }
}
LLMGEN_ROWS(rows_avx512bf16_t, row_avx512bf16, LLMGEN_AVX512BF16)
LLMGEN_AVX512BF16 inline void rows_avx512bf16(const Args& a, int64_t begin, int64_t end) {
  rows_avx512bf16_t<true>(a, begin, end);
}
#endif  // LLMGEN_X86

}  // namespace llmgen
