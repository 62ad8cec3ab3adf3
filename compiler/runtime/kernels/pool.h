// The threads of gemv.cpp's products: a small pool of its own instead of torch's OpenMP team.
//
// On a busy machine an OpenMP parallel region waits, at its closing barrier, for every thread
// of the team, including one whose core is running another process: one late thread stalls
// the product, and a decoding step runs ~200 of them. Here the work is a list of chunks that
// threads claim one at a time (an atomic counter). The calling thread claims chunks too and
// waits only for chunks that a helper has actually claimed: a helper that has not woken up by
// the time the list is empty takes nothing, so a product never waits for a descheduled thread
// to start. Helpers spin for a short while after a product (the next one follows within
// microseconds during decoding), then sleep on a condition variable. Whether a product uses its
// helpers at all is measured while decoding (tuner.h): on a machine whose other work leaves
// this process one core, helpers only take the calling thread's time.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "tuner.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define LLMGEN_PAUSE() _mm_pause()
#else
#define LLMGEN_PAUSE() std::this_thread::yield()
#endif

namespace llmgen {

class Pool {
 public:
  using Chunk = std::function<void(int64_t)>;
  static constexpr int64_t kMaxChunks = 0xFFFF;

  static Pool& instance() {
    static Pool* pool = new Pool();  // never destroyed: helpers may still sleep at exit
    return *pool;
  }

  Tuner tuner;  // read and set under run_mutex_ (gemv.cpp: set_thread_tuning, thread_tuning)

  // fn(i) for every i in [0, chunks), on the calling thread and at most `helpers` others.
  // tuned_bytes > 0: a product reading that many weight bytes, which the tuner may run alone.
  void run(int64_t chunks, int helpers, const Chunk& fn, int64_t tuned_bytes = 0) {
    if (helpers <= 0 || chunks <= 1) {
      for (int64_t i = 0; i < chunks; ++i) fn(i);
      return;
    }
    std::lock_guard<std::mutex> one_at_a_time(run_mutex_);
    if (tuned_bytes > 0 && tuner.alone()) {
      for (int64_t i = 0; i < chunks; ++i) fn(i);
      tuner.finished(tuned_bytes);
      return;
    }
    start(helpers);
    job_.store(&fn, std::memory_order_relaxed);
    wanted_.store(helpers, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    const uint64_t gen = ++last_gen_;
    ticket_.store(gen << 32 | static_cast<uint64_t>(chunks) << 16, std::memory_order_seq_cst);
    gen_.store(static_cast<uint32_t>(gen), std::memory_order_seq_cst);
    if (sleeping_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lock(mutex_);
      wake_.notify_all();
    }
    work(static_cast<uint32_t>(gen));
    // Only chunks a helper is running are left: spin briefly, then give the core away, so that
    // a helper sharing it with this thread (a busy machine) can finish.
    for (int spins = 0; done_.load(std::memory_order_acquire) < chunks; ++spins) {
      if (spins < kWaitSpins) {
        LLMGEN_PAUSE();
      } else {
        std::this_thread::yield();
      }
    }
    if (tuned_bytes > 0) tuner.finished(tuned_bytes);
  }

  std::mutex& lock() { return run_mutex_; }

 private:
  Pool() = default;

  void start(int helpers) {
    while (static_cast<int>(threads_.size()) < helpers) {
      const int id = static_cast<int>(threads_.size());
      threads_.emplace_back([this, id] { loop(id); });
      threads_.back().detach();
    }
  }

  // Claim and run chunks of generation `gen` until none is left.
  void work(uint32_t gen) {
    for (;;) {
      uint64_t ticket = ticket_.load(std::memory_order_acquire);
      const uint64_t chunks = ticket >> 16 & 0xFFFF, next = ticket & 0xFFFF;
      if (static_cast<uint32_t>(ticket >> 32) != gen || next >= chunks) return;
      if (!ticket_.compare_exchange_weak(ticket, ticket + 1, std::memory_order_acq_rel)) continue;
      // The chunk is ours: the product cannot finish before it, so the job is still this one.
      (*job_.load(std::memory_order_acquire))(static_cast<int64_t>(next));
      done_.fetch_add(1, std::memory_order_acq_rel);
    }
  }

  void loop(int id) {
    uint32_t seen = gen_.load(std::memory_order_acquire);
    for (;;) {
      const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(kSpinMicroseconds);
      uint32_t gen;
      int spins = 0;
      while ((gen = gen_.load(std::memory_order_acquire)) == seen) {
        if (++spins % 64 != 0 || std::chrono::steady_clock::now() < spin_until) {
          LLMGEN_PAUSE();
          continue;
        }
        std::unique_lock<std::mutex> lock(mutex_);
        sleeping_.fetch_add(1, std::memory_order_seq_cst);
        wake_.wait(lock, [&] { return gen_.load(std::memory_order_seq_cst) != seen; });
        sleeping_.fetch_sub(1, std::memory_order_seq_cst);
      }
      seen = gen;
      if (id < wanted_.load(std::memory_order_relaxed)) work(gen);
    }
  }

  static constexpr int kSpinMicroseconds = 200;
  static constexpr int kWaitSpins = 2000;
  std::mutex run_mutex_, mutex_;
  std::condition_variable wake_;
  std::vector<std::thread> threads_;
  std::atomic<uint64_t> ticket_{0};  // generation << 32 | chunks << 16 | next chunk
  std::atomic<uint32_t> gen_{0};
  std::atomic<const Chunk*> job_{nullptr};
  std::atomic<int64_t> done_{0};
  std::atomic<int> wanted_{0}, sleeping_{0};
  uint64_t last_gen_ = 0;
};

}  // namespace llmgen
