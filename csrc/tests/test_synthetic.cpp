#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "clock.hpp"
#include "helpers.hpp"

using namespace cn;

TEST_CASE("synthetic samples are the window mean of the true power, stamped on its wall clock") {
  auto p = testing::fast_sensor();
  SyntheticSource s(p);
  s.set_power(300.0, s.origin_ns() + 50'000'000);  // a step 50 ms in
  testing::sleep_s(0.12);
  std::vector<PowerSample> out(512);
  const std::size_t n = s.read_samples(0, out.data(), out.size());
  REQUIRE(n > 30);
  for (std::size_t i = 1; i < n; ++i) CHECK(out[i].wall_us > out[i - 1].wall_us);
  // Sample k's stamp and value follow from the model.
  const int64_t first_k = (out[0].wall_us * 1000 - p.wall_offset_ns - s.origin_ns()) / 2'000'000;
  for (int64_t k = first_k - 1; k <= first_k + 1; ++k) {
    if (s.sample_stamp_us(k) - out[0].wall_us <= p.restamp_us && s.sample_stamp_us(k) >= out[0].wall_us) {
      const int64_t t = s.sample_time_ns(k);
      const double want = s.true_energy_j(t - 1'500'000, t - 1'000'000) / 0.0005;
      CHECK(out[0].power_mw / 1000.0 == doctest::Approx(want).epsilon(1e-3));
    }
  }
  CHECK(out[0].power_mw == 80000);        // idle before the step
  CHECK(out[n - 1].power_mw == 300000);   // loaded after it
}

TEST_CASE("the driver buffer keeps only the newest samples") {
  auto p = testing::fast_sensor();
  p.buffer_size = 10;
  SyntheticSource s(p);
  testing::sleep_s(0.1);  // ~50 samples produced
  std::vector<PowerSample> out(512);
  CHECK(s.read_samples(0, out.data(), out.size()) == 10);
  // Nothing newer than the newest: nothing returned.
  const std::size_t n = s.read_samples(0, out.data(), out.size());
  CHECK(s.read_samples(out[n - 1].wall_us + 1'000'000, out.data(), out.size()) == 0);
}

TEST_CASE("the energy counter is the integral of the true power, in update steps") {
  auto p = testing::fast_sensor();
  p.idle_w = 100.0;
  SyntheticSource s(p);
  const uint64_t e0 = s.read_energy_mj();
  testing::sleep_s(0.2);
  const uint64_t e1 = s.read_energy_mj();
  // 100 W for ~0.2 s, quantised to 10 ms steps: 20 J +- 1 J.
  CHECK(static_cast<double>(e1 - e0) == doctest::Approx(20000.0).epsilon(0.08));
}

TEST_CASE("an upward step overshoots for overshoot_s, then settles") {
  auto p = testing::fast_sensor();
  p.overshoot_fraction = 0.5;
  p.overshoot_s = 0.1;
  SyntheticSource s(p);
  const int64_t t = s.origin_ns() + 1'000'000'000;
  s.set_power(480.0, t);  // rise of 400 W over idle 80 W
  CHECK(s.true_power_w(t + 50'000'000) == doctest::Approx(680.0));
  CHECK(s.true_power_w(t + 150'000'000) == doctest::Approx(480.0));
  CHECK(s.true_energy_j(t, t + 200'000'000) == doctest::Approx(0.1 * 680 + 0.1 * 480));
  s.set_power(100.0, t + 50'000'000);  // replaces the rest of the schedule
  CHECK(s.true_power_w(t + 150'000'000) == doctest::Approx(100.0));
}

TEST_CASE("with a thermal model the die heats as a first-order lag of the power above idle") {
  auto p = testing::fast_sensor();
  p.temperature_c = 40;
  p.thermal_c_per_w = 0.05;  // 500 W above idle: +25 °C when steady
  p.thermal_tau_s = 2.0;
  SyntheticSource s(p);
  const int64_t t0 = s.origin_ns() + 1'000'000'000;
  s.set_power(p.idle_w + 500.0, t0);
  CHECK(s.true_temperature_c(t0) == doctest::Approx(40.0));
  CHECK(s.true_temperature_c(t0 + 2'000'000'000) == doctest::Approx(40.0 + 25.0 * (1 - std::exp(-1.0))));
  CHECK(s.true_temperature_c(t0 + 40'000'000'000) == doctest::Approx(65.0));
  // Back to idle after one time constant: it cools from there the same way.
  s.set_power(p.idle_w, t0 + 2'000'000'000);
  const double at_stop = 40.0 + 25.0 * (1 - std::exp(-1.0));
  CHECK(s.true_temperature_c(t0 + 4'000'000'000) == doctest::Approx(40.0 + (at_stop - 40.0) * std::exp(-1.0)));
}

TEST_CASE("without a thermal model the temperature never moves") {
  auto p = testing::fast_sensor();
  SyntheticSource s(p);
  s.set_power(700.0, s.origin_ns());
  CHECK(s.true_temperature_c(s.origin_ns() + 60'000'000'000) == doctest::Approx(p.temperature_c));
}
