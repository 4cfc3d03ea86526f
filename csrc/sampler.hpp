// The native sampler: between start() and stop() it collects every power
// sample the driver buffers, the energy counter, and the GPU's status, all
// stamped on the host's monotonic clock (Note [One clock]).
//
// Note [Two threads]
// nvmlDeviceGetTotalEnergyConsumption blocks its caller for ~2.5 ms (p99 15 ms)
// while a drain of the power-sample buffer takes ~170 µs. The counter is read
// by a thread of its own so that it never delays the drains or the status
// polls; the two threads share no lock on their paths (each writes only its
// own preallocated rows, and the caller reads them after join()).
//
// Note [Draining and gaps]
// The driver keeps only the newest ~119 power samples (~2.4 s on Hopper), and
// returns those stamped after the last one we saw (Note [Sampler cadence]). A drain whose interval from the previous sample exceeds
// gap_factor times the drain's own sample spacing is a gap; if that drain also
// came back with a full buffer, samples were overwritten before we read them
// (an overflow: `lost` estimates how many). "Full" allows 10 % slack: the
// H200's driver says it keeps 120 samples and returns at most 119. Gaps are
// reported, never interpolated over.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "clock.hpp"
#include "source.hpp"

namespace cn {

// Raised (kept, then rethrown) when a preallocated buffer filled up.
class CapacityError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Note [Sampler cadence]
// Measured on an H200 (driver 580): a drain costs ~0.6 ms of CPU, a status
// read ~80 µs, and an energy-counter read ~6 ms of CPU (the driver spins).
// Draining every 200 ms keeps a 12x margin on the ~2.4 s buffer; the status
// values change every ~100 ms; the counter is a cross-check over whole runs,
// read at 1 Hz plus at start and stop. Together: ~1 % of one core.
struct SamplerConfig {
  double drain_interval_s = 0.200;    // how often the power-sample buffer is drained
  double status_interval_s = 0.100;   // instant power, temperature, SM clock, reasons
  double energy_interval_s = 1.000;   // energy counter (its own thread)
  std::size_t max_power_samples = 1 << 20;  // rows preallocated for each stream
  std::size_t max_status_rows = 1 << 17;
  std::size_t max_energy_rows = 1 << 15;
  std::size_t max_gaps = 4096;
  double gap_factor = 3.0;
};

struct PowerRow {
  int64_t t_ns;       // monotonic
  int64_t wall_us;    // the driver's own stamp
  uint32_t power_mw;
};
struct EnergyRow {
  int64_t t_ns;       // monotonic, middle of the call
  uint64_t energy_mj;
  int64_t call_ns;    // how long the call blocked
};
struct StatusRow {
  int64_t t_ns;       // monotonic
  StatusReading reading;
};
struct Gap {
  int64_t after_ns;   // monotonic stamp of the last sample before the gap
  int64_t before_ns;  // ... and of the first one after it
  int64_t lost;       // samples estimated missing (overflow) or not produced (sensor gap)
  bool overflow;      // true: the buffer overflowed, the samples were lost by us
};

struct SamplerStats {
  int64_t start_ns = 0, stop_ns = 0;
  int64_t drains = 0;
  int64_t duplicates = 0;            // re-stamped repeats of samples already kept (dropped)
  int64_t max_drain_interval_ns = 0;
  double fast_thread_cpu_s = 0.0;    // CPU time of the drain/status thread
  double energy_thread_cpu_s = 0.0;  // CPU time of the energy-counter thread
  ClockMap clock_at_start, clock_at_stop;
  std::size_t driver_buffer_capacity = 0;
};

// Two stamps closer than this are one sample (Note [Re-stamped samples]); the
// driver's samples come >= 10 ms apart.
constexpr int64_t kSameSampleUs = 500;

class Sampler {
 public:
  Sampler(std::shared_ptr<PowerSource> source, SamplerConfig config);
  ~Sampler();
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  // Reads every sensor once on the caller's thread (set-up errors are thrown
  // here), then starts the threads. Throws StateError if already running.
  void start();
  // Stops promptly, joins, drains once more. Never throws the threads' errors:
  // they are kept for rethrow_error(), so the rows collected so far survive.
  void stop();
  bool running() const noexcept { return running_; }
  // Rethrows the first error the threads (or the final drain) met, if any, and clears it.
  void rethrow_error();
  // Asks the drain thread to drain now rather than at its next tick (returns at once).
  void request_drain();

  // Note [Reading while running]: rows [0, count) never change once counted:
  // each thread writes a row, then publishes the count (release); readers load
  // the count (acquire) and may read those rows while the threads run.
  const std::vector<PowerRow>& power() const noexcept { return power_; }
  std::size_t power_count() const noexcept { return n_power_.load(std::memory_order_acquire); }
  const std::vector<EnergyRow>& energy() const noexcept { return energy_; }
  std::size_t energy_count() const noexcept { return n_energy_.load(std::memory_order_acquire); }
  const std::vector<StatusRow>& status() const noexcept { return status_; }
  std::size_t status_count() const noexcept { return n_status_.load(std::memory_order_acquire); }
  const std::vector<Gap>& gaps() const noexcept { return gaps_; }
  std::size_t gap_count() const noexcept { return n_gaps_.load(std::memory_order_acquire); }
  // Complete only after stop(); while running, only start_ns, the clock at start
  // and the driver's capacity are settled.
  const SamplerStats& stats() const noexcept { return stats_; }
  PowerSource& source() noexcept { return *source_; }

  // Note [Virtual time]: on the virtual clock a running sampler has no threads;
  // advance_virtual_clock() calls tick() at each of its deadlines instead.
  int64_t next_deadline_ns() const noexcept;
  void tick(int64_t now_ns);

 private:
  void fast_loop();
  void energy_loop();
  void drain();
  void read_status();
  void read_energy();
  void keep_error(std::exception_ptr e);
  void full_buffer(const char* what, std::size_t rows);  // keeps a CapacityError
  // Sleeps until `deadline_ns` or stop (or, given `requested`, a drain request,
  // which it reports there and clears); true when stopping.
  bool sleep_until(int64_t deadline_ns, bool* requested = nullptr);

  std::shared_ptr<PowerSource> source_;
  SamplerConfig config_;

  std::vector<PowerRow> power_;
  std::vector<EnergyRow> energy_;
  std::vector<StatusRow> status_;
  std::vector<Gap> gaps_;
  std::vector<PowerSample> scratch_;
  std::atomic<std::size_t> n_power_{0}, n_energy_{0}, n_status_{0}, n_gaps_{0};

  // Drain state (fast thread, or the caller when no thread runs).
  int64_t last_seen_wall_us_ = 0;  // the start() instant, then the newest sample's stamp
  bool have_sample_ = false;
  double typical_spacing_us_ = 0.0;
  int64_t last_drain_ns_ = 0;

  SamplerStats stats_;
  std::atomic<bool> running_{false};
  std::mutex lifecycle_;  // held for the whole of start() and stop(): callers on two threads take turns
  mutable std::mutex mutex_;  // guards stop_, drain_requested_ and error_ only
  std::condition_variable wake_;
  bool stop_ = false;
  bool drain_requested_ = false;
  std::exception_ptr error_;
  std::thread fast_, energy_thread_;
  bool virtual_ = false;                         // started on the virtual clock: no threads
  int64_t next_drain_ = 0, next_status_ = 0, next_energy_ = 0;  // its deadlines there
};

// Note [Virtual time]. Switching needs no sampler running; advancing needs the virtual clock.
void use_virtual_clock(int64_t start_ns);
void use_real_clock();
// Moves the virtual clock forward by `ns`, stopping at every running sampler's
// deadlines on the way to let it do that deadline's work.
void advance_virtual_clock(int64_t ns);

}  // namespace cn
