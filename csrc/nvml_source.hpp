// The real sensors of one GPU, read through NVML.
#pragma once

#include <vector>

#include "nvml.hpp"
#include "source.hpp"

namespace cn {

class NvmlSource final : public PowerSource {
 public:
  explicit NvmlSource(NvmlDevice device);

  std::string describe() const override;
  std::size_t sample_buffer_capacity() override { return capacity_; }
  std::size_t read_samples(int64_t last_seen_wall_us, PowerSample* out, std::size_t capacity) override;
  uint64_t read_energy_mj() override;
  StatusReading read_status() override;
  void probe() override;
  int64_t wall_now_ns() override;  // CLOCK_REALTIME, as NVML stamps samples

  const NvmlDevice& device() const noexcept { return device_; }

 private:
  NvmlDevice device_;
  std::size_t capacity_ = 0;
  std::vector<nvmlSample_t> scratch_;  // sized once, in the constructor
  bool has_instant_ = true, has_temperature_ = true, has_clock_ = true, has_reasons_ = true;
};

}  // namespace cn
