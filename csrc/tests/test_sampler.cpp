#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <atomic>
#include <thread>

#include "errors.hpp"
#include "helpers.hpp"
#include "nvml_api.hpp"
#include "sampler.hpp"

using namespace cn;

namespace {

SamplerConfig fast_config() {
  SamplerConfig c;
  c.drain_interval_s = 0.02;
  c.status_interval_s = 0.01;
  c.energy_interval_s = 0.02;
  c.max_power_samples = 1 << 14;
  return c;
}

// Samples the model produced with stamps in (from, to]: what a lossless drain returns.
int64_t produced_between(const SyntheticSource& s, int64_t from_wall_us, int64_t to_wall_us) {
  int64_t n = 0;
  for (int64_t k = 1; s.sample_stamp_us(k) <= to_wall_us; ++k) n += s.sample_stamp_us(k) > from_wall_us;
  return n;
}

}  // namespace

TEST_CASE("start/stop cycles: every cycle collects, nothing leaks (run under ASan)") {
  auto src = std::make_shared<SyntheticSource>(testing::fast_sensor());
  Sampler sampler(src, fast_config());
  for (int cycle = 0; cycle < 30; ++cycle) {
    sampler.start();
    CHECK(sampler.running());
    testing::sleep_s(0.03);
    sampler.stop();
    CHECK_FALSE(sampler.running());
    CHECK(sampler.power_count() >= 5);
    CHECK(sampler.energy_count() >= 2);
    CHECK(sampler.status_count() >= 1);
    sampler.rethrow_error();  // no error kept
  }
}

TEST_CASE("draining through a small buffer loses nothing, and stamps map onto the monotonic clock") {
  auto src = std::make_shared<SyntheticSource>(testing::fast_sensor());  // buffer: 119 x 2 ms = 0.24 s
  Sampler sampler(src, fast_config());
  sampler.start();
  testing::sleep_s(1.0);
  sampler.stop();
  sampler.rethrow_error();
  const std::size_t n = sampler.power_count();
  const auto& rows = sampler.power();
  REQUIRE(n > 400);
  CHECK(sampler.gap_count() == 0);
  CHECK(sampler.stats().duplicates > 0);  // the model re-stamps; the repeats were dropped
  // Every sample the model produced between the first and last we got is there.
  // (+1 µs: the last one may have been reported 1 µs early.)
  CHECK(static_cast<int64_t>(n) == produced_between(*src, rows[0].wall_us - 1, rows[n - 1].wall_us + 1));
  // Clock conversion: a sample's monotonic stamp is the model's time for it (µs stamps: 1 µs of rounding).
  const int64_t k0 = (rows[0].t_ns - src->origin_ns() + 1'000'000) / 2'000'000;
  int64_t k = k0 - 1;
  while (std::llabs(src->sample_stamp_us(k) - rows[0].wall_us) > 1) ++k;  // reported up to 1 µs early
  for (std::size_t i = 0; i < n; i += 50) {
    CHECK(std::llabs(rows[i].t_ns - src->sample_time_ns(k + static_cast<int64_t>(i))) < 3'000 +
          sampler.stats().clock_at_start.uncertainty_ns);
  }
}

TEST_CASE("a starved drain is reported as an overflow gap with the number of samples lost") {
  auto src = std::make_shared<SyntheticSource>(testing::fast_sensor());
  auto config = fast_config();
  config.drain_interval_s = 0.5;  // the buffer holds 0.24 s
  Sampler sampler(src, config);
  sampler.start();
  testing::sleep_s(1.2);
  sampler.stop();
  REQUIRE(sampler.gap_count() >= 1);
  int64_t lost = 0;
  for (std::size_t i = 0; i < sampler.gap_count(); ++i) {
    CHECK(sampler.gaps()[i].overflow);
    lost += sampler.gaps()[i].lost;
  }
  const auto& rows = sampler.power();
  // The first drain already overflowed: count from the start() instant.
  const ClockMap& clock = sampler.stats().clock_at_start;
  const int64_t start_wall_us = (sampler.stats().start_ns + clock.wall_minus_mono_ns) / 1000;
  const int64_t produced = produced_between(*src, start_wall_us, rows[sampler.power_count() - 1].wall_us + 1);
  // The estimate counts spacings, the truth counts samples: they agree to a sample per gap.
  CHECK(std::llabs(static_cast<int64_t>(sampler.power_count()) + lost - produced) <=
        static_cast<int64_t>(sampler.gap_count()) + 1);
}

TEST_CASE("a blocking energy counter does not delay the drains") {
  auto params = testing::fast_sensor();
  params.energy_read_delay_s = 0.25;  // 100x the real counter's typical block
  auto src = std::make_shared<SyntheticSource>(params);
  Sampler sampler(src, fast_config());
  sampler.start();
  testing::sleep_s(1.2);
  sampler.stop();
  // Drains every 20 ms: a drain that waited for the counter would be >= 250 ms late. The bound leaves the
  // thread 130 ms of scheduling delay (a loaded machine, the sanitizers) without missing that.
  CHECK(sampler.stats().max_drain_interval_ns < 150'000'000);
  CHECK(sampler.energy_count() >= 3);
}

TEST_CASE("errors in the thread are kept for the caller, with the rows collected before them") {
  auto params = testing::fast_sensor();
  params.fail_after_reads = 5;
  params.fail_code = NVML_ERROR_GPU_IS_LOST;
  auto src = std::make_shared<SyntheticSource>(params);
  Sampler sampler(src, fast_config());
  sampler.start();
  testing::sleep_s(0.3);
  sampler.stop();  // does not throw
  CHECK(sampler.power_count() > 0);
  try {
    sampler.rethrow_error();
    FAIL("expected NvmlError");
  } catch (const NvmlError& e) {
    CHECK(e.code() == NVML_ERROR_GPU_IS_LOST);
    CHECK(e.function() == "nvmlDeviceGetSamples");
  }
  sampler.rethrow_error();  // cleared
}

TEST_CASE("misuse is a StateError, a full buffer a CapacityError") {
  auto src = std::make_shared<SyntheticSource>(testing::fast_sensor());
  auto config = fast_config();
  config.max_power_samples = 50;
  Sampler sampler(src, config);
  CHECK_THROWS_AS(sampler.stop(), StateError);
  sampler.start();
  CHECK_THROWS_AS(sampler.start(), StateError);
  testing::sleep_s(0.3);
  sampler.stop();
  CHECK(sampler.power_count() == 50);
  CHECK_THROWS_AS(sampler.rethrow_error(), CapacityError);
}

TEST_CASE("rows can be read while the threads run, and a drain can be asked for") {
  auto src = std::make_shared<SyntheticSource>(testing::fast_sensor());
  auto config = fast_config();
  config.drain_interval_s = 10.0;  // no drain unless asked
  Sampler sampler(src, config);
  sampler.start();
  std::size_t seen = 0;
  int64_t last_t = 0;
  for (int i = 0; i < 20; ++i) {
    testing::sleep_s(0.01);
    sampler.request_drain();
    testing::sleep_s(0.005);
    const std::size_t n = sampler.power_count();
    CHECK(n >= seen);
    for (std::size_t j = seen; j < n; ++j) {  // rows published are complete and ordered
      CHECK(sampler.power()[j].t_ns > last_t);
      CHECK(sampler.power()[j].power_mw == 80000);
      last_t = sampler.power()[j].t_ns;
    }
    seen = n;
  }
  CHECK(seen > 50);  // ~0.3 s of 2 ms samples, drained only on request
  sampler.stop();
  sampler.rethrow_error();
}

TEST_CASE("regression: a burst of drain requests does not postpone the periodic drains") {
  // Each requested drain used to move the next periodic drain a full interval
  // later, so after a burst of requests the buffer overflowed (seen in the
  // protocol's warm-up with a fast sensor: 56 samples lost).
  auto src = std::make_shared<SyntheticSource>(testing::fast_sensor());  // buffer: 0.24 s
  auto config = fast_config();
  config.drain_interval_s = 0.05;
  Sampler sampler(src, config);
  sampler.start();
  for (int i = 0; i < 60; ++i) {  // 0.3 s of requests every 5 ms
    sampler.request_drain();
    testing::sleep_s(0.005);
  }
  testing::sleep_s(0.6);  // then none: only the periodic drains keep up
  sampler.stop();
  sampler.rethrow_error();
  CHECK(sampler.gap_count() == 0);
  CHECK(sampler.stats().max_drain_interval_ns < 100'000'000);
}

TEST_CASE("start() and stop() called from two threads at once: one wins, the other gets StateError") {
  auto src = std::make_shared<SyntheticSource>(testing::fast_sensor());
  Sampler sampler(src, fast_config());
  for (int round = 0; round < 20; ++round) {
    std::atomic<int> started{0}, refused{0};
    auto try_start = [&] {
      try {
        sampler.start();
        started += 1;
      } catch (const StateError&) {
        refused += 1;
      }
    };
    std::thread a(try_start), b(try_start);
    a.join();
    b.join();
    CHECK(started == 1);
    CHECK(refused == 1);
    std::atomic<int> stopped{0}, refused_stop{0};
    auto try_stop = [&] {
      try {
        sampler.stop();
        stopped += 1;
      } catch (const StateError&) {
        refused_stop += 1;
      }
    };
    std::thread c(try_stop), d(try_stop);
    c.join();
    d.join();
    CHECK(stopped == 1);
    CHECK(refused_stop == 1);
    CHECK_FALSE(sampler.running());
  }
}

TEST_CASE("virtual clock: a sampler drains at its deadlines and loses nothing over a long advance") {
  use_virtual_clock(1'000'000'000'000LL);
  {
    auto src = std::make_shared<SyntheticSource>(testing::fast_sensor());  // 2 ms samples, 119 kept
    Sampler sampler(src, fast_config());                                   // drains every 20 ms
    const int64_t wall0 = src->wall_now_ns() / 1000;
    sampler.start();
    CHECK_THROWS_AS(use_real_clock(), StateError);  // never switched under a running sampler
    advance_virtual_clock(2'000'000'000LL);          // 2 s: 4x what the driver buffer holds
    CHECK(monotonic_ns() == 1'000'000'000'000LL + 2'000'000'000LL);
    sampler.stop();
    const int64_t wall1 = src->wall_now_ns() / 1000;
    CHECK(sampler.power_count() == static_cast<std::size_t>(produced_between(*src, wall0, wall1)));
    CHECK(sampler.gap_count() == 0);
    CHECK(sampler.stats().drains >= 100);  // one per 20 ms deadline
  }
  use_real_clock();
  CHECK_FALSE(on_virtual_clock());
}
