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

#include <algorithm>
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

// A key or value row as float32: the row itself, or (bfloat16) widened into `wide` first (the
// loops that read it then vectorise as for float32; mixed in, GCC made 4-lane halves).
template <typename T>
__attribute__((always_inline)) inline const float* as_float(const T* row, int64_t dim, float* wide) {
  if constexpr (std::is_same_v<T, float>) {
    return row;
  } else {
    for (int64_t d = 0; d < dim; ++d) wide[d] = widen(row[d]);
    return wide;
  }
}

// Rows [begin, end) of the (batch, heads, queries) rows; written once for every level and
// inlined into each level's function, which the compiler vectorises for its target. T: the
// element type of k and v, float or uint16_t (bfloat16: a bfloat16 cache is read as it is,
// instead of a float32 copy of all of it made for every layer and step). A step's single query
// (queries == 1): the consecutive rows of one key/value head (up to kBundle query heads of a
// group) go together, so that each bfloat16 key and value row is widened once for all of them,
// not once per query head; each row's sums keep their order (the same bits as row by row).
constexpr int64_t kBundle = 8;

template <typename T>
__attribute__((always_inline)) inline void attend_body(const AttendArgs& a, int64_t begin, int64_t end) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  thread_local std::vector<float> scores_buffer, acc_buffer, row_buffer;
  scores_buffer.resize(static_cast<size_t>(a.keys * kBundle));
  acc_buffer.resize(static_cast<size_t>(a.dim * kBundle));
  row_buffer.resize(static_cast<size_t>(a.dim));
  float* const scores = scores_buffer.data();  // plain pointers: each use of a thread_local costs a call
  float* const acc = acc_buffer.data();
  float* const wide = row_buffer.data();  // as_float's bfloat16 row
  const int64_t group = a.heads / a.kv_heads, full = a.dim - a.dim % 8;
  for (int64_t row = begin, n = 1; row < end; row += n) {
    const int64_t b = row / (a.heads * a.queries), h = row / a.queries % a.heads, s = row % a.queries;
    n = a.queries == 1 ? std::min({group - h % group, end - row, kBundle}) : 1;  // rows row .. row + n
    const T* k = static_cast<const T*>(a.k) + b * a.ks[0] + h / group * a.ks[1];
    const T* v = static_cast<const T*>(a.v) + b * a.vs[0] + h / group * a.vs[1];
    const float* m[kBundle];
    float top[kBundle], total[kBundle];
    for (int64_t i = 0; i < n; ++i) {
      m[i] = a.mask != nullptr ? a.mask + b * a.ms[0] + (h + i) * a.ms[1] + s * a.ms[2] : nullptr;
      top[i] = kNegInf;
      total[i] = 0.0f;
    }
    for (int64_t l = 0; l < a.keys; ++l) {
      const float* kl = nullptr;
      for (int64_t i = 0; i < n; ++i) {
        const float add = m[i] != nullptr ? m[i][l * a.ms[3]] : 0.0f;
        float& score = scores[i * a.keys + l];
        if (add == kNegInf) {
          score = kNegInf;
          continue;
        }
        if (kl == nullptr) kl = as_float(k + l * a.ks[2], a.dim, wide);  // once for the bundle
        const float* q = a.q + (row + i) * a.dim;
        float part[8] = {};
        for (int64_t d = 0; d < full; d += 8) {
          for (int j = 0; j < 8; ++j) part[j] += q[d + j] * kl[d + j];
        }
        float dot = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
        for (int64_t d = full; d < a.dim; ++d) dot += q[d] * kl[d];
        score = dot * a.scale + add;
        top[i] = score > top[i] ? score : top[i];
      }
    }
    for (int64_t d = 0; d < n * a.dim; ++d) acc[d] = 0.0f;
    for (int64_t l = 0; l < a.keys; ++l) {
      const float* vl = nullptr;
      for (int64_t i = 0; i < n; ++i) {
        if (top[i] == kNegInf || scores[i * a.keys + l] == kNegInf) continue;
        if (vl == nullptr) vl = as_float(v + l * a.vs[2], a.dim, wide);
        const float p = std::exp(scores[i * a.keys + l] - top[i]);
        total[i] += p;
        float* row_acc = acc + i * a.dim;
        for (int64_t d = 0; d < a.dim; ++d) row_acc[d] += p * vl[d];
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      const float inv = total[i] > 0.0f ? 1.0f / total[i] : 0.0f;
      float* out = a.out + (row + i) * a.dim;
      for (int64_t d = 0; d < a.dim; ++d) out[d] = acc[i * a.dim + d] * inv;
    }
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
