// Whether a product's helper threads pay, measured while decoding (pool.h asks it per product).
//
// A second thread helps only when it gets a core of its own. On a shared machine the scheduler
// may not give it one: Linux's autogroups share the CPU fairly between sessions, so a process
// beside another busy session gets about one core whatever its thread count, and a helper then
// takes its time from the calling thread (measured on this 2-core machine, another session busy
// on both cores: the products of one float32 SmolLM2-135M step took ~45 ms on one thread and
// ~60 ms on two; the caller waited for late helpers only ~1 ms of that). Which is faster
// changes as other work comes and goes, so the pool runs products in windows of kWindow
// products, alone or with helpers, keeps a moving average of the wall time per weight byte of
// each way, and runs the faster one, trying the other one window in kExplore. After a pause of
// kForget without products (a prompt's prefill, another program's turn) both averages are
// forgotten and measured afresh, helpers first: a stale average could otherwise hold the wrong
// way for hundreds of products (measured: a compiled bfloat16 step, 2 threads, right after its
// compilation had kept both cores busy, ran alone for most of 100 steps, 22.7 against 18.1 ms).
// Results do not depend on it: every row is the same dot product whichever thread computes it.
#pragma once

#include <chrono>
#include <cstdint>

namespace llmgen {

class Tuner {
 public:
  using Clock = std::chrono::steady_clock;

  bool enabled = true;
  int64_t windows[2] = {0, 0};  // windows measured alone (0) and with helpers (1)

  // Whether the product starting now runs alone (on the calling thread only).
  bool alone() {
    if (!enabled) return false;
    const Clock::time_point now = Clock::now();
    if (products_ == 0 || now - last_end_ > kMaxGap) {  // a new window (a long gap: not decoding)
      if (now - last_end_ > kForget) {
        known_[0] = known_[1] = false;
        mode_ = 1;
      }
      products_ = 0;
      bytes_ = 0;
      start_ = now;
    }
    return mode_ == 0;
  }

  // The product that alone() was asked for has finished; it read `bytes` of weights.
  void finished(int64_t bytes) {
    if (!enabled) return;
    last_end_ = Clock::now();
    bytes_ += bytes;
    if (++products_ < kWindow) return;
    const double per_byte = std::chrono::duration<double, std::nano>(last_end_ - start_).count() / bytes_;
    cost_[mode_] = known_[mode_] ? 0.75 * cost_[mode_] + 0.25 * per_byte : per_byte;
    known_[mode_] = true;
    ++windows[mode_];
    products_ = 0;
    const int best = !known_[1] ? 1 : !known_[0] ? 0 : cost_[0] <= cost_[1] ? 0 : 1;
    mode_ = ++count_ % kExplore == 0 ? 1 - best : best;
  }

 private:
  static constexpr int64_t kWindow = 48;  // products (a SmolLM2-135M step has ~180 that can share)
  static constexpr int64_t kExplore = 32;
  static constexpr Clock::duration kMaxGap = std::chrono::milliseconds(2);
  static constexpr Clock::duration kForget = std::chrono::milliseconds(50);
  int mode_ = 1;
  bool known_[2] = {false, false};  // cost_ measured since the last pause of kForget
  int64_t products_ = 0, bytes_ = 0, count_ = 0;
  double cost_[2] = {0.0, 0.0};
  Clock::time_point start_{}, last_end_{};
};

}  // namespace llmgen
