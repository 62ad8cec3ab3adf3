// Attention of a decoding step's few queries over a key/value cache (gemv.cpp's operator
// llmgen_native::attend; compiler/runtime/fast_decode.py puts it in place of torch's fused attention
// inside a compiled decoding step).
//
// For one query torch's CPU attention kernel costs ~60 microseconds a layer over 144 cached
// positions (measured on an AVX2 machine), most of it setting up work for a block of queries
// that is not there, and it attends every slot of a static cache, empty ones too. This one
// computes, for each query row, scores q.k * scale + mask over the keys whose mask is not -inf
// (the empty slots of a static cache are skipped, not computed), a float32 softmax, and the
// weighted sum of the values: the same operations as the written-out attention, in float32,
// summed in another order. Grouped-query attention: query head h reads key/value head
// h / (heads / kv_heads). A row whose keys are all masked gets zeros.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "gemv_isa.h"  // bf16_to_float

namespace llmgen {

struct AttendArgs {
  const float* q;     // (batch, heads, queries, dim) contiguous
  const void* k;      // key row l of (b, kv head g) at k + b * ks[0] + g * ks[1] + l * ks[2]; dim contiguous
  const void* v;      // likewise with vs (k and v: float32, or both bfloat16, widened as they are read)
  const float* mask;  // additive, broadcast by its strides ms (b, h, query, key), or nullptr
  float* out;         // (batch, heads, queries, dim) contiguous
  int64_t batch, heads, kv_heads, queries, keys, dim;
  int64_t ks[3], vs[3], ms[4];
  float scale;
};

inline float widen(float value) { return value; }
inline float widen(uint16_t bits) { return bf16_to_float(bits); }  // exact: the same value in float32

// Rows [begin, end) of the (batch, heads, queries) rows; written once for every level and
// inlined into each level's function, which the compiler vectorises for its target. T: the
// element type of k and v, float or uint16_t (bfloat16: a bfloat16 cache is read as it is,
// instead of a float32 copy of all of it made for every layer and step).
template <typename T>
__attribute__((always_inline)) inline void attend_body(const AttendArgs& a, int64_t begin, int64_t end) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  thread_local std::vector<float> scores_buffer, acc_buffer, key_buffer;
  scores_buffer.resize(static_cast<size_t>(a.keys));
  acc_buffer.resize(static_cast<size_t>(a.dim));
  key_buffer.resize(static_cast<size_t>(a.dim));
  float* const scores = scores_buffer.data();  // plain pointers: each use of a thread_local costs a call
  float* const acc = acc_buffer.data();
  float* const key = key_buffer.data();  // a bfloat16 key row widened first: the dot below then
                                         // vectorises as for float32 (mixed in, GCC made 4-lane halves)
  const int64_t group = a.heads / a.kv_heads, full = a.dim - a.dim % 8;
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / (a.heads * a.queries), h = row / a.queries % a.heads, s = row % a.queries;
    const float* q = a.q + row * a.dim;
    const T* k = static_cast<const T*>(a.k) + b * a.ks[0] + h / group * a.ks[1];
    const T* v = static_cast<const T*>(a.v) + b * a.vs[0] + h / group * a.vs[1];
    const float* m = a.mask != nullptr ? a.mask + b * a.ms[0] + h * a.ms[1] + s * a.ms[2] : nullptr;
    float top = kNegInf;
    for (int64_t l = 0; l < a.keys; ++l) {
      const float add = m != nullptr ? m[l * a.ms[3]] : 0.0f;
      if (add == kNegInf) {
        scores[l] = kNegInf;
        continue;
      }
      const float* kl;
      if constexpr (std::is_same_v<T, float>) {
        kl = k + l * a.ks[2];
      } else {
        for (int64_t d = 0; d < a.dim; ++d) key[d] = widen(k[l * a.ks[2] + d]);
        kl = key;
      }
      float part[8] = {};
      for (int64_t d = 0; d < full; d += 8) {
        for (int j = 0; j < 8; ++j) part[j] += q[d + j] * kl[d + j];
      }
      float dot = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
      for (int64_t d = full; d < a.dim; ++d) dot += q[d] * kl[d];
      scores[l] = dot * a.scale + add;
      top = scores[l] > top ? scores[l] : top;
    }
    float* out = a.out + row * a.dim;
    for (int64_t d = 0; d < a.dim; ++d) acc[d] = 0.0f;
    float total = 0.0f;
    if (top != kNegInf) {
      for (int64_t l = 0; l < a.keys; ++l) {
        if (scores[l] == kNegInf) continue;
        const float p = std::exp(scores[l] - top);
        total += p;
        const T* vl = v + l * a.vs[2];
        for (int64_t d = 0; d < a.dim; ++d) acc[d] += p * widen(vl[d]);
      }
    }
    const float inv = total > 0.0f ? 1.0f / total : 0.0f;
    for (int64_t d = 0; d < a.dim; ++d) out[d] = acc[d] * inv;
  }
}

template <typename T>
inline void attend_portable(const AttendArgs& a, int64_t begin, int64_t end) { attend_body<T>(a, begin, end); }

#ifdef LLMGEN_X86
template <typename T>
__attribute__((target("avx2,fma"))) inline void attend_avx2(const AttendArgs& a, int64_t begin, int64_t end) {
  attend_body<T>(a, begin, end);
}
template <typename T>
__attribute__((target("avx512f"))) inline void attend_avx512(const AttendArgs& a, int64_t begin, int64_t end) {
  attend_body<T>(a, begin, end);
}
#endif

}  // namespace llmgen
