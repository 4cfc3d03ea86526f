#pragma once

#include <chrono>
#include <memory>
#include <thread>

#include "synthetic.hpp"

namespace cn::testing {

// A fast sensor (2 ms samples, 0.24 s buffer) so that tests of draining and
// overflow take a fraction of a second; the ratios match the Hopper sensor's.
inline SyntheticParams fast_sensor() {
  SyntheticParams p;
  p.sample_period_s = 0.002;
  p.period_jitter_s = 0.0004;
  p.window_s = 0.0005;
  p.lag_s = 0.001;
  p.noise_w = 0.0;
  p.buffer_size = 119;
  p.energy_update_s = 0.010;
  p.energy_read_delay_s = 0.0;
  p.status_update_s = 0.010;
  return p;
}

inline void sleep_s(double s) { std::this_thread::sleep_for(std::chrono::duration<double>(s)); }

}  // namespace cn::testing
