#include "nvml_source.hpp"

#include <algorithm>

#include "clock.hpp"
#include "errors.hpp"

namespace cn {
namespace {

uint32_t as_milliwatts(nvmlValueType_t type, const nvmlValue_t& v) {
  switch (type) {
    case NVML_VALUE_TYPE_DOUBLE: return static_cast<uint32_t>(v.dVal);
    case NVML_VALUE_TYPE_UNSIGNED_LONG: return static_cast<uint32_t>(v.ulVal);
    case NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: return static_cast<uint32_t>(v.ullVal);
    case NVML_VALUE_TYPE_SIGNED_LONG_LONG: return static_cast<uint32_t>(v.sllVal);
    case NVML_VALUE_TYPE_SIGNED_INT: return static_cast<uint32_t>(v.siVal);
    default: return v.uiVal;
  }
}

// True where the call worked; false where the GPU does not support it; throws otherwise.
bool supported(nvmlReturn_t code, const char* function) {
  if (code == NVML_ERROR_NOT_SUPPORTED) return false;
  nvml_check(code, function);
  return true;
}

}  // namespace

NvmlSource::NvmlSource(NvmlDevice device) : device_(std::move(device)) {
  // With a null buffer NVML reports how many samples it can return at most.
  unsigned int count = 0;
  nvmlValueType_t type{};
  nvml_check(nvml().nvmlDeviceGetSamples(device_.handle(), NVML_TOTAL_POWER_SAMPLES, 0, &type, &count, nullptr),
             "nvmlDeviceGetSamples");
  capacity_ = count;
  // Room for more than the driver claims to hold, so that a full buffer is never truncated.
  scratch_.resize(2 * capacity_ + 16);
}

std::string NvmlSource::describe() const { return "NVML " + device_.name() + " " + device_.pci_bus_id(); }

std::size_t NvmlSource::read_samples(int64_t last_seen_wall_us, PowerSample* out, std::size_t capacity) {
  unsigned int count = static_cast<unsigned int>(std::min(capacity, scratch_.size()));
  nvmlValueType_t type{};
  const nvmlReturn_t rc = nvml().nvmlDeviceGetSamples(device_.handle(), NVML_TOTAL_POWER_SAMPLES,
                                                      static_cast<unsigned long long>(last_seen_wall_us),
                                                      &type, &count, scratch_.data());
  if (rc == NVML_ERROR_NOT_FOUND) return 0;  // nothing newer than last_seen
  nvml_check(rc, "nvmlDeviceGetSamples");
  for (unsigned int i = 0; i < count; ++i) {
    out[i] = PowerSample{static_cast<int64_t>(scratch_[i].timeStamp), as_milliwatts(type, scratch_[i].sampleValue)};
  }
  return count;
}

uint64_t NvmlSource::read_energy_mj() {
  unsigned long long mj = 0;
  nvml_check(nvml().nvmlDeviceGetTotalEnergyConsumption(device_.handle(), &mj),
             "nvmlDeviceGetTotalEnergyConsumption");
  return mj;
}

StatusReading NvmlSource::read_status() {
  const auto& api = nvml();
  const nvmlDevice_t h = device_.handle();
  StatusReading r;
  if (has_instant_) {
    nvmlFieldValue_t f{};
    f.fieldId = kNvmlFieldPowerInstant;
    nvml_check(api.nvmlDeviceGetFieldValues(h, 1, &f), "nvmlDeviceGetFieldValues");
    if (f.nvmlReturn == NVML_SUCCESS) r.instant_power_mw = as_milliwatts(f.valueType, f.value);
  }
  if (has_temperature_) {
    unsigned int c = 0;
    nvml_check(api.nvmlDeviceGetTemperature(h, NVML_TEMPERATURE_GPU, &c), "nvmlDeviceGetTemperature");
    r.temperature_c = c;
  }
  if (has_clock_) {
    unsigned int mhz = 0;
    nvml_check(api.nvmlDeviceGetClockInfo(h, NVML_CLOCK_SM, &mhz), "nvmlDeviceGetClockInfo");
    r.sm_clock_mhz = mhz;
  }
  if (has_reasons_) {
    unsigned long long reasons = 0;
    if (api.nvmlDeviceGetCurrentClocksEventReasons != nullptr) {
      nvml_check(api.nvmlDeviceGetCurrentClocksEventReasons(h, &reasons), "nvmlDeviceGetCurrentClocksEventReasons");
    } else {
      nvml_check(api.nvmlDeviceGetCurrentClocksThrottleReasons(h, &reasons),
                 "nvmlDeviceGetCurrentClocksThrottleReasons");
    }
    r.clock_event_reasons = reasons;
  }
  return r;
}

void NvmlSource::probe() {
  const auto& api = nvml();
  const nvmlDevice_t h = device_.handle();
  read_energy_mj();
  if (api.nvmlDeviceGetFieldValues == nullptr) {
    has_instant_ = false;
  } else {
    nvmlFieldValue_t f{};
    f.fieldId = kNvmlFieldPowerInstant;
    has_instant_ = supported(api.nvmlDeviceGetFieldValues(h, 1, &f), "nvmlDeviceGetFieldValues") &&
                   f.nvmlReturn == NVML_SUCCESS;
  }
  unsigned int u = 0;
  has_temperature_ = supported(api.nvmlDeviceGetTemperature(h, NVML_TEMPERATURE_GPU, &u), "nvmlDeviceGetTemperature");
  has_clock_ = supported(api.nvmlDeviceGetClockInfo(h, NVML_CLOCK_SM, &u), "nvmlDeviceGetClockInfo");
  unsigned long long reasons = 0;
  if (api.nvmlDeviceGetCurrentClocksEventReasons != nullptr) {
    has_reasons_ = supported(api.nvmlDeviceGetCurrentClocksEventReasons(h, &reasons),
                             "nvmlDeviceGetCurrentClocksEventReasons");
  } else if (api.nvmlDeviceGetCurrentClocksThrottleReasons != nullptr) {
    has_reasons_ = supported(api.nvmlDeviceGetCurrentClocksThrottleReasons(h, &reasons),
                             "nvmlDeviceGetCurrentClocksThrottleReasons");
  } else {
    has_reasons_ = false;
  }
}

int64_t NvmlSource::wall_now_ns() { return realtime_ns(); }

}  // namespace cn
