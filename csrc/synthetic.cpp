#include "synthetic.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <thread>

#include "clock.hpp"
#include "errors.hpp"
#include "nvml.hpp"

namespace cn {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}
double unit(uint64_t bits) { return (static_cast<double>(bits >> 11) + 0.5) * 0x1.0p-53; }  // (0, 1)

int64_t seconds_to_ns(double s) { return static_cast<int64_t>(std::llround(s * 1e9)); }

}  // namespace

SyntheticSource::SyntheticSource(SyntheticParams params)
    : params_(params),
      origin_ns_(monotonic_ns()),
      period_ns_(seconds_to_ns(params.sample_period_s)),
      jitter_ns_(seconds_to_ns(params.period_jitter_s)) {
  if (period_ns_ <= 0) throw std::invalid_argument("sample_period_s must be > 0");
  if (2 * jitter_ns_ >= period_ns_) throw std::invalid_argument("period_jitter_s must be < sample_period_s / 2");
  if (params.buffer_size == 0) throw std::invalid_argument("buffer_size must be >= 1");
  if (params.restamp_us < 0 || params.restamp_us * 1000 * 4 > period_ns_) {
    throw std::invalid_argument("restamp_us must be >= 0 and well under the sample period");
  }
  if (params.window_s <= 0 || params.lag_s < 0 || params.noise_w < 0 || params.energy_update_s <= 0 ||
      params.status_update_s <= 0 || params.energy_read_delay_s < 0 || params.overshoot_s < 0 ||
      params.thermal_c_per_w < 0 || params.thermal_tau_s <= 0) {
    throw std::invalid_argument("window, update periods, overshoot_s and thermal_tau_s must be > 0; lag, noise, delay, "
                                "thermal_c_per_w >= 0");
  }
  steps_.reserve(1024);
  steps_.emplace_back(origin_ns_, params.idle_w);
}

int64_t SyntheticSource::wall_now_ns() { return monotonic_ns() + params_.wall_offset_ns; }

int64_t SyntheticSource::sample_time_ns(int64_t k) const {
  const double u = unit(splitmix64(params_.seed * 0x100000001B3ULL ^ static_cast<uint64_t>(k)));
  const int64_t jitter = static_cast<int64_t>((2.0 * u - 1.0) * static_cast<double>(jitter_ns_));
  return origin_ns_ + k * period_ns_ + jitter;
}

int64_t SyntheticSource::last_sample_before(int64_t now_ns) const {
  int64_t k = std::max<int64_t>((now_ns - origin_ns_) / period_ns_, 0);
  while (sample_time_ns(k + 1) <= now_ns) ++k;
  while (k >= 1 && sample_time_ns(k) > now_ns) --k;
  return k;
}

void SyntheticSource::set_power(double watts, int64_t at_ns) {
  if (!(watts >= 0)) throw std::invalid_argument("power must be >= 0 W");
  if (at_ns < 0) at_ns = monotonic_ns();
  std::lock_guard<std::mutex> lock(mutex_);
  // Replace whatever was scheduled from at_ns on.
  auto first_after = std::lower_bound(steps_.begin(), steps_.end(), std::make_pair(at_ns, -1.0));
  const double before = first_after == steps_.begin() ? params_.idle_w : std::prev(first_after)->second;
  steps_.erase(first_after, steps_.end());
  if (watts == before) return;  // no change: keep the schedule short
  const double rise = watts - before;
  if (rise > 0 && params_.overshoot_fraction > 0 && params_.overshoot_s > 0) {
    steps_.emplace_back(at_ns, watts + params_.overshoot_fraction * rise);
    steps_.emplace_back(at_ns + seconds_to_ns(params_.overshoot_s), watts);
  } else {
    steps_.emplace_back(at_ns, watts);
  }
}

double SyntheticSource::integral_locked(int64_t t0_ns, int64_t t1_ns) const {
  if (t1_ns <= t0_ns) return 0.0;
  // steps_ is never empty and starts at origin_ns_; before it the power is idle.
  double joules = 0.0;
  int64_t t = t0_ns;
  if (t < steps_.front().first) {
    const int64_t end = std::min(t1_ns, steps_.front().first);
    joules += params_.idle_w * (end - t) * 1e-9;
    t = end;
  }
  auto it = std::upper_bound(steps_.begin(), steps_.end(), std::make_pair(t, 1e300));
  // `it` is the first step after t; the one before it holds at t.
  while (t < t1_ns) {
    const double watts = std::prev(it)->second;
    const int64_t end = it == steps_.end() ? t1_ns : std::min(t1_ns, it->first);
    joules += watts * (end - t) * 1e-9;
    t = end;
    if (it != steps_.end()) ++it;
  }
  return joules;
}

double SyntheticSource::true_energy_j(int64_t t0_ns, int64_t t1_ns) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return integral_locked(t0_ns, t1_ns);
}

double SyntheticSource::true_power_w(int64_t t_ns) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = std::upper_bound(steps_.begin(), steps_.end(), std::make_pair(t_ns, 1e300));
  return it == steps_.begin() ? params_.idle_w : std::prev(it)->second;
}

double SyntheticSource::true_temperature_c(int64_t t_ns) const {
  if (params_.thermal_c_per_w == 0.0) return params_.temperature_c;
  std::lock_guard<std::mutex> lock(mutex_);
  // First-order lag of the power: over a step of constant power P lasting dt, f -> P + (f - P) exp(-dt / tau).
  const double tau_ns = params_.thermal_tau_s * 1e9;
  double filtered = params_.idle_w;
  for (std::size_t i = 0; i < steps_.size() && steps_[i].first < t_ns; ++i) {
    const int64_t end = i + 1 < steps_.size() ? std::min(t_ns, steps_[i + 1].first) : t_ns;
    const double watts = steps_[i].second;
    filtered = watts + (filtered - watts) * std::exp(-static_cast<double>(end - steps_[i].first) / tau_ns);
  }
  return params_.temperature_c + params_.thermal_c_per_w * (filtered - params_.idle_w);
}

std::size_t SyntheticSource::read_samples(int64_t last_seen_wall_us, PowerSample* out, std::size_t capacity) {
  const int64_t n = reads_.fetch_add(1) + 1;
  if (params_.fail_after_reads >= 0 && n > params_.fail_after_reads) {
    throw NvmlError(params_.fail_code, "nvmlDeviceGetSamples", nvml_error_name(params_.fail_code));
  }
  const int64_t newest = last_sample_before(monotonic_ns());
  if (newest < 1) return 0;
  const int64_t oldest_kept = std::max<int64_t>(1, newest - static_cast<int64_t>(params_.buffer_size) + 1);
  // First sample stamped after last_seen: estimate from the mean spacing, then step.
  const int64_t last_seen_mono = last_seen_wall_us * 1000 - params_.wall_offset_ns;
  int64_t k = std::max(oldest_kept, (last_seen_mono - origin_ns_) / period_ns_ - 2);
  while (k <= newest && sample_stamp_us(k) <= last_seen_wall_us) ++k;

  const int64_t window_ns = seconds_to_ns(params_.window_s), lag_ns = seconds_to_ns(params_.lag_s);
  std::size_t written = 0;
  std::lock_guard<std::mutex> lock(mutex_);
  for (; k <= newest && written < capacity; ++k) {
    const int64_t t = sample_time_ns(k);
    const double mean_w = integral_locked(t - lag_ns - window_ns, t - lag_ns) / (window_ns * 1e-9);
    const uint64_t bits = splitmix64(params_.seed ^ (static_cast<uint64_t>(k) << 1));
    const double gauss = std::sqrt(-2.0 * std::log(unit(bits))) * std::cos(6.283185307179586 * unit(splitmix64(bits)));
    const double watts = std::max(0.0, mean_w + params_.noise_w * gauss);
    // The driver filters on a sample's own stamp but may report it re-stamped a little early.
    const int64_t early = static_cast<int64_t>(splitmix64(bits ^ static_cast<uint64_t>(n)) %
                                               static_cast<uint64_t>(params_.restamp_us + 1));
    out[written++] = PowerSample{sample_stamp_us(k) - early, static_cast<uint32_t>(std::llround(watts * 1000.0))};
  }
  return written;
}

uint64_t SyntheticSource::read_energy_mj() {
  const int64_t now = monotonic_ns();
  const int64_t step = seconds_to_ns(params_.energy_update_s);
  const int64_t updated_at = origin_ns_ + (now - origin_ns_) / step * step;
  const double joules = true_energy_j(origin_ns_, updated_at);
  if (params_.energy_read_delay_s > 0 && !on_virtual_clock()) {  // Note [Virtual time]: no wall time passes
    std::this_thread::sleep_for(std::chrono::nanoseconds(seconds_to_ns(params_.energy_read_delay_s)));
  }
  // The real counter counts from driver load: start it far from zero.
  return 1'000'000'000ULL + static_cast<uint64_t>(std::llround(joules * 1000.0));
}

StatusReading SyntheticSource::read_status() {
  const int64_t now = monotonic_ns();
  const int64_t step = seconds_to_ns(params_.status_update_s);
  const int64_t updated_at = origin_ns_ + (now - origin_ns_) / step * step;
  constexpr int64_t kInstantWindowNs = 5'000'000;
  StatusReading r;
  r.instant_power_mw = static_cast<uint32_t>(
      std::llround(true_energy_j(updated_at - kInstantWindowNs, updated_at) / (kInstantWindowNs * 1e-9) * 1000.0));
  r.temperature_c = static_cast<uint32_t>(std::llround(std::max(0.0, true_temperature_c(updated_at))));
  r.sm_clock_mhz = params_.sm_clock_mhz;
  r.clock_event_reasons = 0;
  return r;
}

}  // namespace cn
