// Matrix-vector products for decoding steps (compiler/native.py builds this file on first use).
//
// out[b, r] = sum_k x[b, k] * w[r, k] (+ bias[r]) for the few rows b of one decoding step.
// Every output element is one dot product accumulated in float32 (16 lanes, then summed), the
// threads of torch's intra-op pool splitting the weight rows between them. Reading the weights
// once per step is the whole cost of decoding, and this reads them at close to the memory
// bandwidth, where torch's general matrix product on a single row does not.
//
// float32 needs AVX-512F; bfloat16 needs AVX512_BF16 too (dot products of bfloat16 pairs into
// float32). compiler/native.py checks the CPU's flags before calling either.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t kRowsPerTask = 16;  // the smallest share of rows one thread takes

float bf16_value(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &wide, sizeof value);
  return value;
}

// Rows [begin, end) of the product (the target attribute does not reach into lambdas).
__attribute__((target("avx512f,avx512bf16"))) void rows_bf16(
    const uint16_t* x, const uint16_t* w, const float* bias, at::BFloat16* out,
    int64_t batch, int64_t rows, int64_t in, int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) {
    const uint16_t* row = w + r * in;
    for (int64_t b = 0; b < batch; ++b) {
      const uint16_t* xb = x + b * in;
      __m512 acc = _mm512_setzero_ps();
      int64_t k = 0;
      for (; k + 32 <= in; k += 32) {  // 32 bfloat16 pairs per instruction
        acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_loadu_si512(row + k),
                               (__m512bh)_mm512_loadu_si512(xb + k));
      }
      float sum = _mm512_reduce_add_ps(acc);
      for (; k < in; ++k) sum += bf16_value(row[k]) * bf16_value(xb[k]);
      if (bias != nullptr) sum += bias[r];
      out[b * rows + r] = at::BFloat16(sum);  // one rounding, of the finished sum
    }
  }
}

__attribute__((target("avx512f"))) void rows_f32(
    const float* x, const float* w, const float* bias, float* out,
    int64_t batch, int64_t rows, int64_t in, int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) {
    const float* row = w + r * in;
    for (int64_t b = 0; b < batch; ++b) {
      const float* xb = x + b * in;
      __m512 acc = _mm512_setzero_ps();
      int64_t k = 0;
      for (; k + 16 <= in; k += 16) {
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(row + k), _mm512_loadu_ps(xb + k), acc);
      }
      float sum = _mm512_reduce_add_ps(acc);
      for (; k < in; ++k) sum += row[k] * xb[k];
      if (bias != nullptr) sum += bias[r];
      out[b * rows + r] = sum;
    }
  }
}

}  // namespace

// x: (..., in), w: (rows, in) contiguous, of one dtype; bias: (rows,) or None -> (..., rows).
torch::Tensor gemv(const torch::Tensor& x_in, const torch::Tensor& w, const c10::optional<torch::Tensor>& bias) {
  TORCH_CHECK(x_in.dim() >= 1 && w.dim() == 2 && x_in.size(-1) == w.size(1), "gemv: x (..., in) and w (rows, in)");
  TORCH_CHECK(w.is_contiguous(), "gemv: a contiguous w");
  const torch::Tensor x = x_in.contiguous();
  TORCH_CHECK(x.scalar_type() == w.scalar_type(), "gemv: x and w of one dtype");
  const int64_t rows = w.size(0), in = w.size(1), batch = in == 0 ? 0 : x.numel() / in;
  torch::Tensor b32;  // the bias in float32: added to the float32 sum before its rounding
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == rows, "gemv: bias (rows,)");
    b32 = bias->to(torch::kFloat32).contiguous();
  }
  const float* bias_ptr = b32.defined() ? b32.data_ptr<float>() : nullptr;
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = rows;
  auto out = torch::empty(shape, x.options());
  if (x.scalar_type() == torch::kBFloat16) {
    const auto* xp = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
    const auto* wp = reinterpret_cast<const uint16_t*>(w.data_ptr<at::BFloat16>());
    auto* op = out.data_ptr<at::BFloat16>();
    at::parallel_for(0, rows, kRowsPerTask, [&](int64_t begin, int64_t end) {
      rows_bf16(xp, wp, bias_ptr, op, batch, rows, in, begin, end);
    });
  } else {
    TORCH_CHECK(x.scalar_type() == torch::kFloat32, "gemv: float32 or bfloat16");
    const float *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>();
    float* op = out.data_ptr<float>();
    at::parallel_for(0, rows, kRowsPerTask, [&](int64_t begin, int64_t end) {
      rows_f32(xp, wp, bias_ptr, op, batch, rows, in, begin, end);
    });
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("gemv", &gemv, "x @ w.T (+ bias) for an x of a few rows", pybind11::arg("x"), pybind11::arg("w"),
        pybind11::arg("bias") = pybind11::none());
}
