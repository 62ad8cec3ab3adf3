// How gemv.cpp's operators run a product: the CPU's instruction-set level, how many threads a
// product's size pays for, its rows cut into chunks for the pool (pool.h), and the float32 forms
// of x and bias the row kernels read (gemv_isa.h). Included by gemv.cpp only, after torch's headers
// and the kernels'.
#pragma once

namespace {

enum Level { kPortable = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Bf16 = 3 };

int detect_level() {
#ifdef LLMGEN_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return __builtin_cpu_supports("avx512bf16") ? kAvx512Bf16 : kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return kAvx2;
#endif
  return kPortable;
}

const int kCpuLevel = detect_level();

constexpr int64_t kRowGroup = 4;  // chunks hold whole multiples of it
constexpr int64_t kChunkBytes = 64 * 1024;  // the work unit threads claim: small, for late threads

// Weight bytes one thread's share must at least hold: one chunk. During decoding the helpers spin
// between products, so handing one a chunk costs ~1-2 microseconds, less than the 4-6 it takes to
// read 64 KiB (measured, 2 threads, a whole SmolLM2 step's products back to back: 10.23 against
// 10.57 ms in bfloat16, 19.56 against 21.06 ms in float32 with 256 KiB, when the 576x192
// projections ran on one thread).
int64_t g_bytes_per_thread = kChunkBytes;

int g_max_threads = 0;  // 0: torch's intra-op thread count (torch.set_num_threads, OMP_NUM_THREADS)

int threads_for(int64_t weight_bytes) {
  const int64_t useful = std::max<int64_t>(1, weight_bytes / g_bytes_per_thread);
  return static_cast<int>(std::min<int64_t>(useful, g_max_threads > 0 ? g_max_threads : at::get_num_threads()));
}

using RowsFn = void (*)(const llmgen::Args&, int64_t, int64_t);

RowsFn rows_fn(int level, bool bf16) {
#ifdef LLMGEN_X86
  switch (level) {
    case kAvx512Bf16: return bf16 ? llmgen::rows_avx512bf16 : llmgen::rows_avx512<false>;
    case kAvx512: return bf16 ? llmgen::rows_avx512<true> : llmgen::rows_avx512<false>;
    case kAvx2: return bf16 ? llmgen::rows_avx2<true> : llmgen::rows_avx2<false>;
    default: break;
  }
#endif
  return bf16 ? llmgen::rows_scalar<true> : llmgen::rows_scalar<false>;
}

// fn over every row of each of `products` (one x, weights of one width), in one run of the pool:
// chunks of a multiple of the row group, about kChunkBytes of weights each, at most
// Pool::kMaxChunks in all, on as many threads as all their bytes pay for.
void run_rows(RowsFn fn, const std::vector<llmgen::Args>& products, int64_t row_bytes_in) {
  const int64_t row_bytes = std::max<int64_t>(1, row_bytes_in);
  int64_t rows = 0;
  for (const auto& args : products) rows += args.rows;
  const int threads = threads_for(rows * row_bytes);
  int64_t chunk_rows = std::max<int64_t>(kRowGroup, kChunkBytes / row_bytes / kRowGroup * kRowGroup);
  // at most kMaxChunks in all: each product's last chunk may be partial, one more chunk each
  const int64_t most = llmgen::Pool::kMaxChunks - static_cast<int64_t>(products.size());
  chunk_rows = std::max(chunk_rows, (rows + most - 1) / most);
  std::vector<int64_t> first{0};  // products[j]'s chunks: first[j] .. first[j + 1]
  for (const auto& args : products) first.push_back(first.back() + (args.rows + chunk_rows - 1) / chunk_rows);
  if (threads <= 1 || first.back() <= 1) {
    for (const auto& args : products) fn(args, 0, args.rows);
    return;
  }
  llmgen::Pool::instance().run(first.back(), threads - 1, [&](int64_t i) {
    size_t j = 0;
    while (i >= first[j + 1]) ++j;
    const int64_t begin = (i - first[j]) * chunk_rows;
    fn(products[j], begin, std::min(products[j].rows, begin + chunk_rows));
  }, rows * row_bytes);
}

// x for the shift kernels: float32, each block of `step` elements stored as its even-indexed
// elements then its odd ones (gemv_isa.h); the tail past the last whole block as it is. Into a
// buffer of the calling thread's, reused from call to call (the product has finished with it
// when gemv returns).
const float* prepare_x(const torch::Tensor& x_in, int64_t step) {
  thread_local std::vector<float> buffer;
  const torch::Tensor x = x_in.contiguous();
  const int64_t in = x.size(-1), batch = in == 0 ? 0 : x.numel() / in, full = step > 0 ? in - in % step : 0;
  buffer.resize(static_cast<size_t>(x.numel()));
  const auto* src = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
  float* dst = buffer.data();
  for (int64_t b = 0; b < batch; ++b, src += in, dst += in) {
    for (int64_t k = 0; k < full; k += step) {
      for (int64_t j = 0; j < step / 2; ++j) {
        dst[k + j] = llmgen::bf16_to_float(src[k + 2 * j]);
        dst[k + step / 2 + j] = llmgen::bf16_to_float(src[k + 2 * j + 1]);
      }
    }
    for (int64_t k = full; k < in; ++k) dst[k] = llmgen::bf16_to_float(src[k]);
  }
  return buffer.data();
}

// The bias in float32 (added to the float32 sums before any rounding), or an undefined tensor.
torch::Tensor bias_f32(const c10::optional<torch::Tensor>& bias, int64_t rows, const char* name) {
  if (!bias.has_value()) return {};
  TORCH_CHECK(bias->dim() == 1 && bias->size(0) == rows, name, ": bias (rows,)");
  return bias->to(torch::kFloat32).contiguous();
}

// A product's output: x's shape with its last dimension `rows`, x's dtype.
torch::Tensor output_for(const torch::Tensor& x, int64_t rows) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = rows;
  return torch::empty(shape, x.options());
}

// A product of float32 x (..., in) and contiguous int8 w (rows, in) with a float32 scale per row.
void check_int8(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& scale, const char* name) {
  TORCH_CHECK(x.dim() >= 1 && w.dim() == 2 && x.size(-1) == w.size(1) && w.is_contiguous() &&
              x.scalar_type() == torch::kFloat32 && w.scalar_type() == torch::kInt8,
              name, ": float32 x (..., in) and contiguous int8 w (rows, in)");
  TORCH_CHECK(scale.dim() == 1 && scale.size(0) == w.size(0) && scale.scalar_type() == torch::kFloat32 &&
              scale.is_contiguous(), name, ": float32 scale (rows,)");
}

}  // namespace
