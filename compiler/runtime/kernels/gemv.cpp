// Matrix-vector products for decoding steps (compiler/runtime/native.py builds this file on first use).
//
// out[b, r] = sum_k x[b, k] * w[r, k] (+ bias[r]) for the few rows b of one decoding step,
// every output element one dot product accumulated in float32 (bfloat16: rounded once, at the
// end). Reading the weights once per step is the whole cost of decoding, and this reads them
// at close to the memory bandwidth, where torch's general matrix product on one row does not.
//
// One build holds every instruction-set level (gemv_isa.h): portable C++, AVX2 + FMA, AVX-512F
// and AVX512_BF16, each function compiled for its own target. cpu_level() reads the CPU's
// flags (cpuid, through the compiler's __builtin_cpu_supports) when the module loads, and gemv
// runs the level it is given, refusing one the CPU lacks. Threads: pool.h, as many as the
// product's size pays for (threads_for), at most torch's intra-op thread count, and only while
// they are measured to pay (tuner.h).
//
// gemv2 and gemv3: the products of one input (a layer's gate and up; q, k and v) in one run of the
// pool, for compiled steps (compiler/runtime/compiled_step.py, group_products). products.h: how a
// product is cut into chunks and threads.
//
// Also here: gemv_int8 (int8 weights with one float32 scale per row, compiler/runtime/int8_weights.py)
// and prefill_bf16 (bfloat16 prefill's float32 matrix product, gemm.h, on torch's OpenMP team).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

// The kernels' headers with hidden visibility: calls between their inline functions (a row
// kernel per weight row, its store) then go straight to them instead of through the procedure
// linkage table of this shared object (~205,000 such calls a SmolLM2 step). The standard and
// torch headers above keep their own visibility.
#pragma GCC visibility push(hidden)
#include "gemv_isa.h"  // first: it says whether this is x86 (LLMGEN_X86)
#include "attend.h"
#include "gemm.h"
#include "pool.h"
#pragma GCC visibility pop

#include "products.h"

int cpu_level() { return kCpuLevel; }

int64_t set_bytes_per_thread(int64_t bytes) {
  TORCH_CHECK(bytes > 0, "bytes per thread must be positive");
  const int64_t before = g_bytes_per_thread;
  g_bytes_per_thread = bytes;
  return before;
}

int set_max_threads(int threads) {
  TORCH_CHECK(threads >= 0, "threads must be 0 (torch's count) or more");
  const int before = g_max_threads;
  g_max_threads = threads;
  return before;
}

bool set_thread_tuning(bool on) {
  auto& pool = llmgen::Pool::instance();
  std::lock_guard<std::mutex> lock(pool.lock());
  const bool before = pool.tuner.enabled;
  pool.tuner.enabled = on;
  return before;
}

std::vector<int64_t> thread_tuning() {
  auto& pool = llmgen::Pool::instance();
  std::lock_guard<std::mutex> lock(pool.lock());
  return {pool.tuner.windows[0], pool.tuner.windows[1]};
}

// x: (..., in); each w: (rows, in) contiguous, of x's dtype; each bias: (rows,) or None -> one
// (..., rows) per w: the products of one input (a layer's q, k, v; gate and up) in one run of the pool.
std::vector<torch::Tensor> gemv_group(const torch::Tensor& x_in, const std::vector<torch::Tensor>& ws,
                                      const std::vector<c10::optional<torch::Tensor>>& biases, int64_t level) {
  TORCH_CHECK(!ws.empty() && biases.size() == ws.size() && x_in.dim() >= 1, "gemv: x (..., in), one bias (or None) per w");
  TORCH_CHECK(level >= kPortable && level <= kCpuLevel, "gemv: instruction-set level ", level,
              " is not available on this CPU (its level is ", kCpuLevel, ")");
  const bool bf16 = ws[0].scalar_type() == torch::kBFloat16;
  const int64_t in = x_in.size(-1), batch = in == 0 ? 0 : x_in.numel() / in;
  for (const auto& w : ws) {
    TORCH_CHECK(w.dim() == 2 && in == w.size(1), "gemv: x (..., in) and w (rows, in)");
    TORCH_CHECK(w.is_contiguous(), "gemv: a contiguous w");
    TORCH_CHECK(x_in.scalar_type() == w.scalar_type(), "gemv: x and w of one dtype");
  }
  TORCH_CHECK(bf16 || ws[0].scalar_type() == torch::kFloat32, "gemv: float32 or bfloat16");
  torch::Tensor xs;  // what the kernel reads of x
  const void* x_data;
  if (!bf16 || level == kAvx512Bf16) {
    xs = x_in.contiguous();
    x_data = xs.data_ptr();
  } else {
    x_data = prepare_x(x_in, level == kAvx512 ? 32 : level == kAvx2 ? 16 : 0);
  }
  std::vector<torch::Tensor> outs, b32s;
  std::vector<llmgen::Args> products;
  for (size_t j = 0; j < ws.size(); ++j) {
    const int64_t rows = ws[j].size(0);
    b32s.push_back(bias_f32(biases[j], rows, "gemv"));
    outs.push_back(output_for(x_in, rows));  // bfloat16: each float32 sum rounded once
    products.push_back({x_data, ws[j].data_ptr(), b32s[j].defined() ? b32s[j].data_ptr<float>() : nullptr,
                        bf16 ? nullptr : outs[j].data_ptr<float>(),
                        bf16 ? reinterpret_cast<uint16_t*>(outs[j].data_ptr<at::BFloat16>()) : nullptr, batch, rows, in});
  }
  run_rows(rows_fn(static_cast<int>(level), bf16), products, in * static_cast<int64_t>(ws[0].element_size()));
  return outs;
}

torch::Tensor gemv(const torch::Tensor& x, const torch::Tensor& w, const c10::optional<torch::Tensor>& bias, int64_t level) {
  return gemv_group(x, {w}, {bias}, level)[0];
}

std::tuple<torch::Tensor, torch::Tensor> gemv2(const torch::Tensor& x, const torch::Tensor& w0, const torch::Tensor& w1,
                                               const c10::optional<torch::Tensor>& b0, const c10::optional<torch::Tensor>& b1,
                                               int64_t level) {
  auto outs = gemv_group(x, {w0, w1}, {b0, b1}, level);
  return {outs[0], outs[1]};
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> gemv3(
    const torch::Tensor& x, const torch::Tensor& w0, const torch::Tensor& w1, const torch::Tensor& w2,
    const c10::optional<torch::Tensor>& b0, const c10::optional<torch::Tensor>& b1, const c10::optional<torch::Tensor>& b2,
    int64_t level) {
  auto outs = gemv_group(x, {w0, w1, w2}, {b0, b1, b2}, level);
  return {outs[0], outs[1], outs[2]};
}

// x @ (scale[:, None] * w).T (+ bias) for float32 x (..., in) of a few rows and int8 weights w (rows,
// in) with one float32 scale per row: each weight widened to float32, the row's sum times its
// scale. level: 0 portable, 1 or more AVX2 (the int8 kernel has no AVX-512 form).
torch::Tensor gemv_int8(const torch::Tensor& x_in, const torch::Tensor& w, const torch::Tensor& scale,
                        const c10::optional<torch::Tensor>& bias, int64_t level) {
  TORCH_CHECK(level >= kPortable && level <= kCpuLevel, "gemv_int8: instruction-set level ", level,
              " is not available on this CPU (its level is ", kCpuLevel, ")");
  check_int8(x_in, w, scale, "gemv_int8");
  const int64_t rows = w.size(0), in = w.size(1), batch = in == 0 ? 0 : x_in.numel() / in;
  const torch::Tensor x = x_in.contiguous();
  const torch::Tensor b32 = bias_f32(bias, rows, "gemv_int8");
  torch::Tensor out = output_for(x_in, rows);
  llmgen::Args args{x.data_ptr<float>(), w.data_ptr(), b32.defined() ? b32.data_ptr<float>() : nullptr,
                    out.data_ptr<float>(), nullptr, batch, rows, in};
  args.scale = scale.data_ptr<float>();
  RowsFn fn = llmgen::rows_int8_scalar;
#ifdef LLMGEN_X86
  if (level >= kAvx2) fn = llmgen::rows_int8_avx2;
#endif
  run_rows(fn, {args}, in);
  return out;
}

// dst = src widened from bfloat16 to float32 (exact: a 16-bit shift), both contiguous and of one
// size, on the pool's threads (bfloat16 prefill's float32 products, compiler/runtime/fast_decode.py:
// torch's own conversion is an OpenMP region, which on a busy machine waits for every thread).
void widen(const torch::Tensor& src, const torch::Tensor& dst) {
  TORCH_CHECK(src.scalar_type() == torch::kBFloat16 && dst.scalar_type() == torch::kFloat32 && src.is_contiguous() &&
              dst.is_contiguous() && src.numel() == dst.numel(), "widen: contiguous bfloat16 src, float32 dst of one size");
  const auto* from = reinterpret_cast<const uint16_t*>(src.data_ptr<at::BFloat16>());
  float* to = dst.data_ptr<float>();
  const int64_t n = src.numel(), chunk = kChunkBytes / 2;
  const int threads = threads_for(n * 2);
  const auto part = [&](int64_t i) {
    const int64_t end = std::min(n, (i + 1) * chunk);
    for (int64_t k = i * chunk; k < end; ++k) to[k] = llmgen::bf16_to_float(from[k]);
  };
  const int64_t chunks = (n + chunk - 1) / chunk;
  if (threads <= 1 || chunks > llmgen::Pool::kMaxChunks) {
    for (int64_t i = 0; i < chunks; ++i) part(i);
  } else {
    llmgen::Pool::instance().run(chunks, threads - 1, part);
  }
}

// gemm.h's product over every column of args.out, in chunks of up to 4 panels and 256 KiB of widened
// weights (they stay in the L2 cache while every row of x passes them), fewer where that leaves under
// 4 chunks a thread; on torch's own threads (its OpenMP team, the build has -fopenmp), as the rest of
// a prefill: the pool's helpers would wait for the cores that OpenMP threads spin on after the
// previous operation.
void run_gemm(const llmgen::GemmArgs& args) {
  const int64_t rows = args.n, in = args.k;
  const int threads = g_max_threads > 0 ? g_max_threads : at::get_num_threads();
  const int64_t panels = (rows + llmgen::kNr - 1) / llmgen::kNr, panel_bytes = llmgen::kNr * in * 4;
  const int64_t most = std::clamp<int64_t>((256 << 10) / std::max<int64_t>(panel_bytes, 1), 1, 4);
  const int64_t per_chunk = std::clamp<int64_t>(panels / (4 * std::max(threads, 1)), 1, most);
  const int64_t chunk = per_chunk * llmgen::kNr, chunks = (rows + chunk - 1) / chunk;
  const auto part = [&](int64_t i) {
    thread_local std::vector<float> buffer;  // the chunk's panels of widened weights
    buffer.resize(static_cast<size_t>(chunk * std::max<int64_t>(in, 1)));
#ifdef LLMGEN_X86
    llmgen::gemm_avx2(args, i * chunk, std::min(rows, (i + 1) * chunk), buffer.data());
#endif
  };
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) part(i);
  });
}

// x @ w.T (+ bias) for bfloat16 x (..., in) and w (rows, in) of many rows of x (prefill), on a CPU
// with AVX2 and FMA: every sum in float32, rounded once to bfloat16 (gemm.h).
torch::Tensor prefill_bf16(const torch::Tensor& x_in, const torch::Tensor& w, const c10::optional<torch::Tensor>& bias) {
  TORCH_CHECK(kCpuLevel >= kAvx2, "prefill_bf16: needs AVX2 and FMA");
  TORCH_CHECK(x_in.dim() >= 1 && w.dim() == 2 && x_in.size(-1) == w.size(1) && w.is_contiguous() &&
              x_in.scalar_type() == torch::kBFloat16 && w.scalar_type() == torch::kBFloat16,
              "prefill_bf16: bfloat16 x (..., in) and contiguous w (rows, in)");
  const int64_t rows = w.size(0), in = w.size(1), batch = in == 0 ? 0 : x_in.numel() / in;
  const torch::Tensor x = x_in.to(torch::kFloat32).contiguous();  // widened once: (batch, in)
  const torch::Tensor b32 = bias_f32(bias, rows, "prefill_bf16");
  torch::Tensor out = output_for(x_in, rows);
  if (out.numel() == 0) return out;
  run_gemm({x.data_ptr<float>(), reinterpret_cast<const uint16_t*>(w.data_ptr<at::BFloat16>()),
            b32.defined() ? b32.data_ptr<float>() : nullptr, reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>()),
            batch, rows, in});
  return out;
}

// x @ (scale[:, None] * w).T (+ bias) for float32 x (..., in) of many rows (prefill) and int8 w (rows,
// in) with one float32 scale per row, on a CPU with AVX2 and FMA: float32 sums of the float32
// weights the int8 ones stand for (gemm.h), stored as float32.
torch::Tensor prefill_int8(const torch::Tensor& x_in, const torch::Tensor& w, const torch::Tensor& scale,
                           const c10::optional<torch::Tensor>& bias) {
  TORCH_CHECK(kCpuLevel >= kAvx2, "prefill_int8: needs AVX2 and FMA");
  check_int8(x_in, w, scale, "prefill_int8");
  const int64_t rows = w.size(0), in = w.size(1), batch = in == 0 ? 0 : x_in.numel() / in;
  const torch::Tensor x = x_in.contiguous();
  const torch::Tensor b32 = bias_f32(bias, rows, "prefill_int8");
  torch::Tensor out = output_for(x_in, rows);
  if (out.numel() == 0) return out;
  llmgen::GemmArgs args{x.data_ptr<float>(), nullptr, b32.defined() ? b32.data_ptr<float>() : nullptr, nullptr,
                        batch, rows, in};
  args.w8 = w.data_ptr<int8_t>();
  args.scale = scale.data_ptr<float>();
  args.out32 = out.data_ptr<float>();
  run_gemm(args);
  return out;
}

// softmax(q k^T * scale + mask) v for a decoding step's few queries (attend.h), float32: q (batch,
// heads, queries, dim); k, v (batch, kv_heads, keys, dim), both float32 or both bfloat16, any
// strides (copied when the last dimension's is not 1); mask: float32, broadcastable to (batch,
// heads, queries, keys), or None.
torch::Tensor attend(const torch::Tensor& q_in, const torch::Tensor& k_in, const torch::Tensor& v_in,
                     const c10::optional<torch::Tensor>& mask, double scale) {
  const torch::Tensor k = k_in.stride(-1) == 1 ? k_in : k_in.contiguous();
  const torch::Tensor v = v_in.stride(-1) == 1 ? v_in : v_in.contiguous();
  TORCH_CHECK(q_in.dim() == 4 && k.dim() == 4 && v.dim() == 4, "attend: q, k, v of 4 dimensions");
  const bool bf16 = k.scalar_type() == torch::kBFloat16;
  TORCH_CHECK(q_in.scalar_type() == torch::kFloat32 && v.scalar_type() == k.scalar_type() &&
              (bf16 || k.scalar_type() == torch::kFloat32), "attend: float32 q; k, v both float32 or both bfloat16");
  const torch::Tensor q = q_in.contiguous();
  const int64_t batch = q.size(0), heads = q.size(1), queries = q.size(2), dim = q.size(3);
  const int64_t kv_heads = k.size(1), keys = k.size(2);
  TORCH_CHECK(k.size(0) == batch && v.size(0) == batch && v.size(1) == kv_heads && v.size(2) == keys &&
              k.size(3) == dim && v.size(3) == dim && kv_heads > 0 && heads % kv_heads == 0,
              "attend: k, v (batch, kv_heads, keys, dim) with heads a multiple of kv_heads");
  int64_t mask_strides[4] = {0, 0, 0, 0};  // broadcast dimensions: stride 0
  if (mask.has_value()) {
    const int64_t sizes[4] = {batch, heads, queries, keys};
    TORCH_CHECK(mask->scalar_type() == torch::kFloat32 && mask->dim() <= 4, "attend: a float32 mask");
    for (int64_t i = 0, j = 4 - mask->dim(); i < mask->dim(); ++i, ++j) {
      TORCH_CHECK(mask->size(i) == sizes[j] || mask->size(i) == 1, "attend: the mask does not broadcast to the scores");
      mask_strides[j] = mask->size(i) == 1 ? 0 : mask->stride(i);
    }
  }
  torch::Tensor out = torch::empty({batch, heads, queries, dim}, q.options());
  llmgen::AttendArgs args{q.data_ptr<float>(), k.data_ptr(), v.data_ptr(),
                          mask.has_value() ? mask->data_ptr<float>() : nullptr, out.data_ptr<float>(),
                          batch, heads, kv_heads, queries, keys, dim,
                          {k.stride(0), k.stride(1), k.stride(2)}, {v.stride(0), v.stride(1), v.stride(2)},
                          {mask_strides[0], mask_strides[1], mask_strides[2], mask_strides[3]}, static_cast<float>(scale)};
  void (*fn)(const llmgen::AttendArgs&, int64_t, int64_t) = bf16 ? llmgen::attend_portable<uint16_t> : llmgen::attend_portable<float>;
#ifdef LLMGEN_X86
  if (kCpuLevel >= kAvx512) {
    fn = bf16 ? llmgen::attend_avx512<uint16_t> : llmgen::attend_avx512<float>;
  } else if (kCpuLevel >= kAvx2) {
    fn = bf16 ? llmgen::attend_avx2<uint16_t> : llmgen::attend_avx2<float>;
  }
#endif
  const int64_t rows = batch * heads * queries, group = heads / kv_heads;
  const int64_t per = queries == 1 ? group : 1, units = rows / per;  // one query: a group's rows together
  const int threads = threads_for(2 * keys * dim * k.element_size() * rows / group);
  if (threads <= 1 || units <= 1 || units > llmgen::Pool::kMaxChunks) {
    fn(args, 0, rows);
  } else {
    llmgen::Pool::instance().run(units, threads - 1, [&](int64_t i) { fn(args, i * per, (i + 1) * per); });
  }
  return out;
}

// The same product as a torch operator, llmgen_native::gemv, for torch.compile: its compiled
// graph calls it through the dispatcher, with no Python in between (compiler/runtime/fast_decode.py
// registers the output shape it needs to trace it).
TORCH_LIBRARY(llmgen_native, m) {
  m.def("gemv(Tensor x, Tensor w, Tensor? bias, int level) -> Tensor");
  m.def("gemv2(Tensor x, Tensor w0, Tensor w1, Tensor? b0, Tensor? b1, int level) -> (Tensor, Tensor)");
  m.def("gemv3(Tensor x, Tensor w0, Tensor w1, Tensor w2, Tensor? b0, Tensor? b1, Tensor? b2, int level) -> (Tensor, Tensor, Tensor)");
  m.def("gemv_int8(Tensor x, Tensor w, Tensor scale, Tensor? bias, int level) -> Tensor");
  m.def("attend(Tensor q, Tensor k, Tensor v, Tensor? mask, float scale) -> Tensor");
}
TORCH_LIBRARY_IMPL(llmgen_native, CPU, m) {
  m.impl("gemv", &gemv);
  m.impl("gemv2", &gemv2);
  m.impl("gemv3", &gemv3);
  m.impl("gemv_int8", &gemv_int8);
  m.impl("attend", &attend);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("gemv", &gemv, "x @ w.T (+ bias) for an x of a few rows, at an instruction-set level", pybind11::arg("x"),
        pybind11::arg("w"), pybind11::arg("bias") = pybind11::none(), pybind11::arg("level"));
  m.def("gemv_int8", &gemv_int8, "x @ (scale[:, None] * w).T (+ bias): float32 x of a few rows, int8 w, float32 scale",
        pybind11::arg("x"), pybind11::arg("w"), pybind11::arg("scale"), pybind11::arg("bias") = pybind11::none(),
        pybind11::arg("level"));
  m.def("prefill_int8", &prefill_int8, "x @ (scale[:, None] * w).T (+ bias): float32 x of many rows, int8 w (prefill)",
        pybind11::arg("x"), pybind11::arg("w"), pybind11::arg("scale"), pybind11::arg("bias") = pybind11::none());
  m.def("prefill_bf16", &prefill_bf16, "x @ w.T (+ bias) for bfloat16 x of many rows (prefill): float32 sums, rounded once",
        pybind11::arg("x"), pybind11::arg("w"), pybind11::arg("bias") = pybind11::none());
  m.def("widen", &widen, "dst = src (bfloat16) as float32, on the kernel's threads", pybind11::arg("src"), pybind11::arg("dst"));
  m.def("cpu_level", &cpu_level, "the highest level this CPU runs: 0 portable, 1 AVX2+FMA, 2 AVX-512F, 3 AVX512_BF16");
  m.def("set_max_threads", &set_max_threads, "most threads per product (0: torch's count); returns the previous value");
  m.def("set_thread_tuning", &set_thread_tuning,
        "whether products measure if their helper threads pay (pool.h, tuner.h; default on); returns the previous value");
  m.def("thread_tuning", &thread_tuning, "windows of products run alone and with helpers so far (tuner.h)");
  m.def("set_bytes_per_thread", &set_bytes_per_thread, "weight bytes that pay for one more thread; returns the previous value");
}
