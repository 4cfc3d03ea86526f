#include "sampler.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>
#include <string>

#include "errors.hpp"

namespace cn {
namespace {

int64_t to_ns(double s) { return static_cast<int64_t>(std::llround(s * 1e9)); }

// The running samplers, for advance_virtual_clock() (Note [Virtual time]); and
// how many run on the real clock, so that the clock is never switched under them.
std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}
std::vector<Sampler*>& virtual_samplers() {
  static std::vector<Sampler*> v;
  return v;
}
std::atomic<int>& real_samplers() {
  static std::atomic<int> n{0};
  return n;
}

}  // namespace

void use_virtual_clock(int64_t start_ns) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  if (real_samplers().load() > 0 || !virtual_samplers().empty()) {
    throw StateError("cannot switch clocks while a sampler runs: stop it first");
  }
  virtual_time::now().store(start_ns, std::memory_order_release);
  virtual_time::enabled().store(true, std::memory_order_release);
}

void use_real_clock() {
  std::lock_guard<std::mutex> lock(registry_mutex());
  if (!virtual_samplers().empty()) throw StateError("cannot switch clocks while a sampler runs: stop it first");
  virtual_time::enabled().store(false, std::memory_order_release);
}

void advance_virtual_clock(int64_t ns) {
  if (!on_virtual_clock()) throw StateError("advance_virtual_clock(): the virtual clock is not in use");
  if (ns < 0) throw std::invalid_argument("the clock only moves forward");
  const int64_t target = virtual_time::now().load() + ns;
  while (true) {
    std::vector<Sampler*> running;
    {
      std::lock_guard<std::mutex> lock(registry_mutex());
      running = virtual_samplers();
    }
    int64_t next = target;
    for (Sampler* s : running) next = std::min(next, s->next_deadline_ns());
    next = std::max(next, virtual_time::now().load());
    virtual_time::now().store(next, std::memory_order_release);
    for (Sampler* s : running) {
      if (s->next_deadline_ns() <= next) s->tick(next);
    }
    if (next >= target) return;
  }
}

Sampler::Sampler(std::shared_ptr<PowerSource> source, SamplerConfig config)
    : source_(std::move(source)), config_(config) {
  if (!source_) throw std::invalid_argument("Sampler needs a power source");
  if (!(config_.drain_interval_s > 0 && config_.status_interval_s > 0 && config_.energy_interval_s > 0)) {
    throw std::invalid_argument("drain, status and energy intervals must be > 0 s");
  }
  if (!(config_.gap_factor > 1)) throw std::invalid_argument("gap_factor must be > 1");
  // Note [No allocation while sampling]: every row the threads write is allocated here.
  power_.resize(config_.max_power_samples);
  energy_.resize(config_.max_energy_rows);
  status_.resize(config_.max_status_rows);
  gaps_.resize(config_.max_gaps);
  stats_.driver_buffer_capacity = source_->sample_buffer_capacity();
  scratch_.resize(2 * stats_.driver_buffer_capacity + 16);
}

Sampler::~Sampler() {
  if (running_) {
    try {
      stop();
    } catch (...) {
    }
  }
}

void Sampler::keep_error(std::exception_ptr e) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!error_) error_ = e;
}

void Sampler::full_buffer(const char* what, std::size_t rows) {
  keep_error(std::make_exception_ptr(CapacityError(
      "sampler buffer full after " + std::to_string(rows) + " " + what +
      ": the window ran longer than the sampler was sized for; give a larger max_duration_s")));
}

void Sampler::rethrow_error() {
  std::exception_ptr e;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    std::swap(e, error_);
  }
  if (e) std::rethrow_exception(e);
}

bool Sampler::sleep_until(int64_t deadline_ns, bool* requested) {
  std::unique_lock<std::mutex> lock(mutex_);
  const int64_t wait = deadline_ns - monotonic_ns();
  if (wait > 0) {
    wake_.wait_for(lock, std::chrono::nanoseconds(wait),
                   [this, requested] { return stop_ || (requested != nullptr && drain_requested_); });
  }
  if (requested != nullptr) {
    *requested = drain_requested_;
    drain_requested_ = false;
  }
  return stop_;
}

void Sampler::request_drain() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    drain_requested_ = true;
  }
  wake_.notify_all();
}

void Sampler::start() {
  std::lock_guard<std::mutex> life(lifecycle_);
  if (running_) throw StateError("Sampler.start(): already running; call stop() first");
  source_->probe();
  n_power_ = 0;
  n_energy_ = 0;
  n_status_ = 0;
  n_gaps_ = 0;
  stats_ = SamplerStats{};
  stats_.driver_buffer_capacity = source_->sample_buffer_capacity();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = false;
    drain_requested_ = false;
    error_ = nullptr;
  }
  stats_.clock_at_start = ClockMap::measure([this] { return source_->wall_now_ns(); });
  // Samples stamped before start() belong to no window of ours.
  last_seen_wall_us_ = source_->wall_now_ns() / 1000;
  have_sample_ = false;
  typical_spacing_us_ = 0.0;
  stats_.start_ns = monotonic_ns();
  // One synchronous read of each stream: errors surface on the caller's thread.
  read_energy();
  read_status();
  last_drain_ns_ = monotonic_ns();
  drain();
  if (on_virtual_clock()) {  // Note [Virtual time]: no threads; advance_virtual_clock() ticks it
    const int64_t now = monotonic_ns();
    next_drain_ = now + to_ns(config_.drain_interval_s);
    next_status_ = now + to_ns(config_.status_interval_s);
    next_energy_ = now + to_ns(config_.energy_interval_s);
    virtual_ = true;
    std::lock_guard<std::mutex> lock(registry_mutex());
    virtual_samplers().push_back(this);
    running_ = true;
    return;
  }
  virtual_ = false;
  fast_ = std::thread([this] { fast_loop(); });
  try {
    energy_thread_ = std::thread([this] { energy_loop(); });
  } catch (...) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    fast_.join();
    throw;
  }
  real_samplers() += 1;
  running_ = true;
}

int64_t Sampler::next_deadline_ns() const noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  return drain_requested_ ? 0 : std::min({next_drain_, next_status_, next_energy_});
}

void Sampler::tick(int64_t now) {
  bool requested = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    std::swap(requested, drain_requested_);
  }
  try {  // as the threads do: an error is kept for the caller, and the rows so far survive
    if (requested || now >= next_drain_) {
      drain();
      next_drain_ = now + to_ns(config_.drain_interval_s);
    }
    if (now >= next_status_) {
      read_status();
      next_status_ = now + to_ns(config_.status_interval_s);
    }
    if (now >= next_energy_) {
      read_energy();
      next_energy_ = now + to_ns(config_.energy_interval_s);
    }
  } catch (...) {
    keep_error(std::current_exception());
    next_drain_ = next_status_ = next_energy_ = INT64_MAX;  // a thread that failed stops working
  }
}

void Sampler::stop() {
  std::lock_guard<std::mutex> life(lifecycle_);
  if (!running_) throw StateError("Sampler.stop(): not running; call start() first");
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  if (virtual_) {
    std::lock_guard<std::mutex> lock(registry_mutex());
    auto& v = virtual_samplers();
    v.erase(std::remove(v.begin(), v.end(), this), v.end());
  } else {
    fast_.join();
    energy_thread_.join();
    real_samplers() -= 1;
  }
  running_ = false;
  // Cover the window up to now: one more drain and counter read.
  try {
    drain();
    read_energy();
  } catch (...) {
    keep_error(std::current_exception());
  }
  stats_.stop_ns = monotonic_ns();
  stats_.clock_at_stop = ClockMap::measure([this] { return source_->wall_now_ns(); });
}

void Sampler::fast_loop() {
  const int64_t drain_ns = to_ns(config_.drain_interval_s), status_ns = to_ns(config_.status_interval_s);
  int64_t next_drain = monotonic_ns() + drain_ns, next_status = monotonic_ns() + status_ns;
  bool requested = false;
  try {
    while (!sleep_until(std::min(next_drain, next_status), &requested)) {
      const int64_t now = monotonic_ns();
      if (requested || now >= next_drain) {
        drain();
        // The next periodic drain is a full interval after this one, whatever
        // caused it (requests must not push it later and later).
        next_drain = now + drain_ns;
      }
      if (now >= next_status) {
        read_status();
        next_status = std::max(next_status + status_ns, now + status_ns / 2);
      }
    }
  } catch (...) {
    keep_error(std::current_exception());
  }
  stats_.fast_thread_cpu_s = thread_cpu_s();
}

void Sampler::energy_loop() {
  const int64_t period = to_ns(config_.energy_interval_s);
  int64_t next = monotonic_ns() + period;
  try {
    while (!sleep_until(next)) {
      read_energy();
      next = std::max(next + period, monotonic_ns() + period / 2);
    }
  } catch (...) {
    keep_error(std::current_exception());
  }
  stats_.energy_thread_cpu_s = thread_cpu_s();
}

void Sampler::drain() {
  const int64_t t = monotonic_ns();
  std::size_t n = source_->read_samples(last_seen_wall_us_, scratch_.data(), scratch_.size());
  stats_.drains += 1;
  stats_.max_drain_interval_ns = std::max(stats_.max_drain_interval_ns, t - last_drain_ns_);
  last_drain_ns_ = t;
  const bool full = n + std::max<std::size_t>(2, stats_.driver_buffer_capacity / 10) >= stats_.driver_buffer_capacity;
  // Note [Re-stamped samples]: the driver may report a sample we already have
  // with its stamp moved by a microsecond; it is the same sample, not a new one.
  std::size_t first = 0;
  if (have_sample_) {
    while (first < n && scratch_[first].wall_us <= last_seen_wall_us_ + kSameSampleUs) ++first;
    stats_.duplicates += static_cast<int64_t>(first);
  }
  if (first == n) return;
  const PowerSample* fresh = scratch_.data() + first;
  n -= first;

  const ClockMap& clock = stats_.clock_at_start;
  if (n >= 3) typical_spacing_us_ = static_cast<double>(fresh[n - 1].wall_us - fresh[0].wall_us) / (n - 1);
  // last_seen_wall_us_ starts at the start() instant: a buffer already
  // overflowing at the first drain is a gap too.
  if (typical_spacing_us_ > 0) {
    const double interval_us = static_cast<double>(fresh[0].wall_us - last_seen_wall_us_);
    const std::size_t g = n_gaps_.load(std::memory_order_relaxed);
    if (interval_us > config_.gap_factor * typical_spacing_us_ && g < gaps_.size()) {
      gaps_[g] = Gap{clock.to_monotonic_ns(last_seen_wall_us_), clock.to_monotonic_ns(fresh[0].wall_us),
                     std::max<int64_t>(1, std::llround(interval_us / typical_spacing_us_) - 1), full};
      n_gaps_.store(g + 1, std::memory_order_release);
    }
  }
  std::size_t count = n_power_.load(std::memory_order_relaxed);  // only this thread writes it
  const std::size_t room = power_.size() - count;
  if (n > room) full_buffer("power samples", power_.size());
  for (std::size_t i = 0; i < std::min(n, room); ++i) {
    power_[count++] = PowerRow{clock.to_monotonic_ns(fresh[i].wall_us), fresh[i].wall_us, fresh[i].power_mw};
  }
  n_power_.store(count, std::memory_order_release);
  last_seen_wall_us_ = fresh[n - 1].wall_us;
  have_sample_ = true;
}

void Sampler::read_status() {
  const int64_t t = monotonic_ns();
  const StatusReading r = source_->read_status();
  const std::size_t i = n_status_.load(std::memory_order_relaxed);
  if (i == status_.size()) return full_buffer("status rows", status_.size());
  status_[i] = StatusRow{t, r};
  n_status_.store(i + 1, std::memory_order_release);
}

void Sampler::read_energy() {
  const int64_t t0 = monotonic_ns();
  const uint64_t mj = source_->read_energy_mj();
  const int64_t t1 = monotonic_ns();
  const std::size_t i = n_energy_.load(std::memory_order_relaxed);
  if (i == energy_.size()) return full_buffer("energy rows", energy_.size());
  energy_[i] = EnergyRow{t0 + (t1 - t0) / 2, mj, t1 - t0};
  n_energy_.store(i + 1, std::memory_order_release);
}

}  // namespace cn
