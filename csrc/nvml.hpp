// NVML, opened with dlopen on first use (Note [NVML symbol table]).
#pragma once

#include <cstdint>
#include <string>

#include "nvml_api.hpp"

namespace cn {

struct NvmlApi {
#define CN_DECLARE(name, type) \
  using name##_fn = type;      \
  name##_fn name = nullptr;
  CN_NVML_REQUIRED_SYMBOLS(CN_DECLARE)
  CN_NVML_OPTIONAL_SYMBOLS(CN_DECLARE)
#undef CN_DECLARE
};

// The loaded and initialised NVML. Throws NvmlError (LIBRARY_NOT_FOUND,
// FUNCTION_NOT_FOUND, or nvmlInit's error) on failure; a later call tries again.
// The library is libnvidia-ml.so.1, or $CLEAR_NATIVE_NVML_LIBRARY when set.
const NvmlApi& nvml();

// Throws NvmlError for any code but NVML_SUCCESS.
void nvml_check(nvmlReturn_t code, const char* function);

// NVML's name for a return code, without needing the library loaded.
const char* nvml_error_name(int code);

// One GPU as NVML sees it.
class NvmlDevice {
 public:
  // `pci_bus_id` as CUDA gives it ("0000:65:00.0"): this is how a CUDA device
  // index, under any CUDA_VISIBLE_DEVICES, maps to the right NVML handle.
  static NvmlDevice from_pci_bus_id(const std::string& pci_bus_id);
  // NVML's own enumeration order (not CUDA's): for tools, not for measuring.
  static NvmlDevice from_nvml_index(unsigned int index);

  nvmlDevice_t handle() const noexcept { return handle_; }
  std::string name() const;
  std::string uuid() const;
  const std::string& pci_bus_id() const noexcept { return pci_bus_id_; }
  // Enforced power limit in mW, or 0 where NVML cannot tell.
  unsigned int power_limit_mw() const;
  // What the card runs at now, for telling its states apart (Note [Launch-latency state],
  // clear_native/backend.py); each 0 where NVML cannot tell.
  unsigned int clock_mhz(nvmlClockType_t which) const;
  unsigned int pcie_link_generation() const;
  unsigned int pcie_link_width() const;

 private:
  NvmlDevice(nvmlDevice_t handle, std::string bus_id) : handle_(handle), pci_bus_id_(std::move(bus_id)) {}
  nvmlDevice_t handle_;
  std::string pci_bus_id_;
};

std::string nvml_driver_version();
std::string nvml_library_version();  // "" where the driver lacks the call
unsigned int nvml_device_count();

}  // namespace cn
