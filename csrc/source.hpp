// What the sampler reads: a GPU's power sensors behind one interface, so that
// the same thread, draining and gap detection run on a real GPU (NvmlSource)
// and on a model of one with a known truth (SyntheticSource).
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>

namespace cn {

// A field a source cannot read is left at its "unavailable" value.
constexpr uint32_t kUnavailable32 = std::numeric_limits<uint32_t>::max();
constexpr uint64_t kUnavailable64 = std::numeric_limits<uint64_t>::max();

struct PowerSample {
  int64_t wall_us;    // the driver's stamp: µs of the source's wall clock
  uint32_t power_mw;  // board power over the sensor's averaging window
};

struct StatusReading {
  uint32_t instant_power_mw = kUnavailable32;
  uint32_t temperature_c = kUnavailable32;
  uint32_t sm_clock_mhz = kUnavailable32;
  uint64_t clock_event_reasons = kUnavailable64;  // NVML clocks-event (throttle) bit mask
};

// All methods may throw NvmlError. None allocates after construction.
class PowerSource {
 public:
  virtual ~PowerSource() = default;
  virtual std::string describe() const = 0;
  // How many samples the driver keeps; older ones are overwritten.
  virtual std::size_t sample_buffer_capacity() = 0;
  // Writes the buffered samples stamped after `last_seen_wall_us`, oldest
  // first, at most `capacity` of them, and returns how many it wrote.
  virtual std::size_t read_samples(int64_t last_seen_wall_us, PowerSample* out, std::size_t capacity) = 0;
  // The board's energy counter, in mJ since an arbitrary origin. May block for ms.
  virtual uint64_t read_energy_mj() = 0;
  // Instant power, temperature, SM clock, clocks-event reasons. Fields the GPU
  // does not support stay unavailable; probe() has said which.
  virtual StatusReading read_status() = 0;
  // Checks every reading once (on the caller's thread, so set-up errors surface
  // there) and disables the status fields the GPU does not support.
  virtual void probe() = 0;
  // Now, on the clock the sample stamps use, in ns.
  virtual int64_t wall_now_ns() = 0;
};

}  // namespace cn
