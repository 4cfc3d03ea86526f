// A model of a GPU power sensor with a known truth, behind the PowerSource
// interface. It reproduces what SENSORS.md measured on Hopper: a sample every
// ~20 ms with jittered spacing, each one the mean of the true power over a
// short window that ends a lag before the sample's stamp, plus noise; a driver
// buffer that keeps only the newest ~119 samples; an energy counter that
// advances in ~100 ms steps and blocks its caller for milliseconds; an
// overshoot when the load steps up; stamps on a wall clock that is not the
// monotonic clock, which a read may report a microsecond early (seen on an
// H200: the same sample, read twice, with stamps 1 µs apart). Everything is deterministic given the seed and the times.
#pragma once

#include <atomic>
#include <mutex>
#include <utility>
#include <vector>

#include "source.hpp"

namespace cn {

struct SyntheticParams {
  double sample_period_s = 0.020;      // mean spacing of samples
  double period_jitter_s = 0.004;      // each stamp moves by up to ± this (must be < period / 2)
  double window_s = 0.005;             // each sample averages the true power over this window...
  double lag_s = 0.010;                // ...which ends this long before the sample's stamp
  double noise_w = 2.0;                // standard deviation of Gaussian noise on each sample, W
  std::size_t buffer_size = 119;       // samples the driver keeps
  double energy_update_s = 0.100;      // the energy counter advances in steps of this
  double energy_read_delay_s = 0.0025; // each counter read blocks its caller this long
  double status_update_s = 0.100;      // instant power, temperature, clock refresh period
  double idle_w = 80.0;                // true power until the first set_power
  double overshoot_fraction = 0.0;     // after a step up by dW the power is new + fraction*dW...
  double overshoot_s = 0.080;          // ...for this long
  int64_t wall_offset_ns = 1'700'000'000'000'000'000LL;  // wall clock = monotonic + this
  int64_t restamp_us = 1;              // each read may report a stamp up to this many µs early
  uint64_t seed = 1;
  int64_t fail_after_reads = -1;       // >= 0: read_samples fails after this many calls
  int fail_code = 15;                  // ... with this NVML code (15 = GPU is lost)
  uint32_t temperature_c = 45;        // at idle power (and always, where thermal_c_per_w is 0)
  double thermal_c_per_w = 0.0;        // steady-state rise per watt above idle_w (a card heats as it draws)...
  double thermal_tau_s = 4.0;          // ...reached as a first-order lag of this time constant
  uint32_t sm_clock_mhz = 1980;
};

class SyntheticSource final : public PowerSource {
 public:
  explicit SyntheticSource(SyntheticParams params);

  std::string describe() const override { return "synthetic sensor"; }
  std::size_t sample_buffer_capacity() override { return params_.buffer_size; }
  std::size_t read_samples(int64_t last_seen_wall_us, PowerSample* out, std::size_t capacity) override;
  uint64_t read_energy_mj() override;
  StatusReading read_status() override;
  void probe() override {}
  int64_t wall_now_ns() override;

  // The load: from monotonic time `at_ns` on (default now) the true power is `watts`
  // (plus the overshoot of a step up). Later calls replace what followed `at_ns`.
  void set_power(double watts, int64_t at_ns = -1);

  // The truth, for tests: energy in J between two monotonic times, and power at one.
  double true_energy_j(int64_t t0_ns, int64_t t1_ns) const;
  double true_power_w(int64_t t_ns) const;
  // The die's temperature at a monotonic time (°C, before the sensor rounds it): temperature_c plus
  // thermal_c_per_w times the true power, low-passed with thermal_tau_s, above idle.
  double true_temperature_c(int64_t t_ns) const;
  // Monotonic time of sample k (k >= 1) and its stamp as the driver reports it.
  int64_t sample_time_ns(int64_t k) const;
  int64_t sample_stamp_us(int64_t k) const { return (sample_time_ns(k) + params_.wall_offset_ns) / 1000; }
  int64_t origin_ns() const noexcept { return origin_ns_; }
  const SyntheticParams& params() const noexcept { return params_; }

 private:
  double integral_locked(int64_t t0_ns, int64_t t1_ns) const;  // J
  int64_t last_sample_before(int64_t now_ns) const;            // largest k with time <= now, or 0

  SyntheticParams params_;
  int64_t origin_ns_;
  int64_t period_ns_, jitter_ns_;
  mutable std::mutex mutex_;
  std::vector<std::pair<int64_t, double>> steps_;  // (from t_ns, watts), sorted by time
  std::atomic<int64_t> reads_{0};  // read_samples calls: for failure injection and re-stamping
};

}  // namespace cn
