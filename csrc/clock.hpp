// Note [One clock]
// Everything clear_native compares is stamped with the host's CLOCK_MONOTONIC in
// ns. NVML stamps its power samples with µs of CLOCK_REALTIME (the wall clock,
// which NTP may slew or step). ClockMap is the one place where a wall-clock
// stamp becomes a monotonic one: the offset between the clocks is measured at
// sampler start (and again at stop, so that a step in between is reported).
#pragma once

#include <atomic>
#include <cstdint>
#include <ctime>

namespace cn {

inline int64_t clock_ns(clockid_t id) {
  timespec ts{};
  clock_gettime(id, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

// Note [Virtual time]
// The CPU tests run the protocol against the synthetic sensor. On the real
// clock their answers depend on how promptly the OS schedules the sampler's
// threads and the test's sleeps: under load a sleep overshoots, a drain comes
// late, and a test that checks a CV or a wall time fails by chance. On the
// virtual clock nothing moves unless the program asks it to: monotonic_ns()
// returns a counter, sleeping advances it (advance_virtual_clock), and each
// running sampler does, at each of its deadlines on the way, exactly what its
// threads would have done at that instant (the same drain, status and counter
// reads), on the advancing thread. The answers are then a function of the
// inputs alone. Only the synthetic sensor may be used on it; the threads, the
// real sensor and the GPU stay on the real clock (and their own tests).
namespace virtual_time {
inline std::atomic<bool>& enabled() {
  static std::atomic<bool> on{false};
  return on;
}
inline std::atomic<int64_t>& now() {
  static std::atomic<int64_t> ns{0};
  return ns;
}
}  // namespace virtual_time

inline bool on_virtual_clock() { return virtual_time::enabled().load(std::memory_order_acquire); }
inline int64_t monotonic_ns() {
  return on_virtual_clock() ? virtual_time::now().load(std::memory_order_acquire) : clock_ns(CLOCK_MONOTONIC);
}
inline int64_t realtime_ns() { return clock_ns(CLOCK_REALTIME); }
inline double thread_cpu_s() { return clock_ns(CLOCK_THREAD_CPUTIME_ID) * 1e-9; }

struct ClockMap {
  int64_t wall_minus_mono_ns = 0;  // wall = mono + offset
  int64_t uncertainty_ns = 0;      // half the tightest bracket the offset was read in

  int64_t to_monotonic_ns(int64_t wall_us) const { return wall_us * 1000 - wall_minus_mono_ns; }

  // Reads `wall_now_ns` between two monotonic reads, several times, and keeps
  // the tightest bracket.
  template <class WallNow>
  static ClockMap measure(WallNow&& wall_now_ns, int tries = 7) {
    ClockMap best;
    int64_t best_width = INT64_MAX;
    for (int i = 0; i < tries; ++i) {
      const int64_t m0 = monotonic_ns();
      const int64_t w = wall_now_ns();
      const int64_t m1 = monotonic_ns();
      if (m1 - m0 < best_width) {
        best_width = m1 - m0;
        best.wall_minus_mono_ns = w - (m0 + (m1 - m0) / 2);
        best.uncertainty_ns = (m1 - m0) / 2;
      }
    }
    return best;
  }
};

}  // namespace cn
