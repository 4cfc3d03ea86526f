#include "nvml.hpp"

#include <dlfcn.h>

#include <cstdlib>

#include "errors.hpp"

namespace cn {
namespace {

const char* library_name() {
  const char* env = std::getenv("CLEAR_NATIVE_NVML_LIBRARY");
  return (env != nullptr && env[0] != '\0') ? env : "libnvidia-ml.so.1";
}

NvmlApi load() {
  const char* lib = library_name();
  void* handle = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    throw NvmlError(NVML_ERROR_LIBRARY_NOT_FOUND, "dlopen",
                    std::string("cannot open ") + lib + ": " + (why ? why : "unknown reason"));
  }
  NvmlApi api;
#define CN_LOAD_REQUIRED(name, type)                                                    \
  api.name = reinterpret_cast<type>(dlsym(handle, #name));                              \
  if (api.name == nullptr) {                                                            \
    throw NvmlError(NVML_ERROR_FUNCTION_NOT_FOUND, "dlsym",                             \
                    std::string(lib) + " has no symbol " #name " (driver too old?)");   \
  }
#define CN_LOAD_OPTIONAL(name, type) api.name = reinterpret_cast<type>(dlsym(handle, #name));
  CN_NVML_REQUIRED_SYMBOLS(CN_LOAD_REQUIRED)
  CN_NVML_OPTIONAL_SYMBOLS(CN_LOAD_OPTIONAL)
#undef CN_LOAD_REQUIRED
#undef CN_LOAD_OPTIONAL
  // The handle stays open for the life of the process: NVML keeps driver state.
  nvml_check(api.nvmlInit_v2(), "nvmlInit_v2");
  return api;
}

}  // namespace

const NvmlApi& nvml() {
  // A function-local static: thread-safe, and retried on the next call if load() throws.
  static const NvmlApi api = load();
  return api;
}

const char* nvml_error_name(int code) {
  switch (code) {
    case 0: return "Success";
    case 1: return "Uninitialized";
    case 2: return "Invalid Argument";
    case 3: return "Not Supported";
    case 4: return "Insufficient Permissions";
    case 5: return "Already Initialized";
    case 6: return "Not Found";
    case 7: return "Insufficient Size";
    case 8: return "Insufficient External Power";
    case 9: return "Driver Not Loaded";
    case 10: return "Timeout";
    case 11: return "Interrupt Request Issue";
    case 12: return "NVML Shared Library Not Found";
    case 13: return "Function Not Found";
    case 14: return "Corrupted infoROM";
    case 15: return "GPU is lost";
    case 16: return "GPU requires restart";
    case 17: return "Operating System Call Failed";
    case 18: return "RM has detected an NVML/RM version mismatch";
    case 19: return "In use by another client";
    case 20: return "Insufficient Memory";
    case 21: return "No data";
    default: return "Unknown Error";
  }
}

void nvml_check(nvmlReturn_t code, const char* function) {
  if (code != NVML_SUCCESS) throw NvmlError(code, function, nvml_error_name(code));
}

NvmlDevice NvmlDevice::from_pci_bus_id(const std::string& pci_bus_id) {
  nvmlDevice_t handle = nullptr;
  nvml_check(nvml().nvmlDeviceGetHandleByPciBusId_v2(pci_bus_id.c_str(), &handle),
             "nvmlDeviceGetHandleByPciBusId_v2");
  return NvmlDevice(handle, pci_bus_id);
}

NvmlDevice NvmlDevice::from_nvml_index(unsigned int index) {
  nvmlDevice_t handle = nullptr;
  nvml_check(nvml().nvmlDeviceGetHandleByIndex_v2(index, &handle), "nvmlDeviceGetHandleByIndex_v2");
  return NvmlDevice(handle, "");
}

std::string NvmlDevice::name() const {
  char buf[kNvmlStringBuffer] = {};
  nvml_check(nvml().nvmlDeviceGetName(handle_, buf, sizeof buf), "nvmlDeviceGetName");
  return buf;
}

std::string NvmlDevice::uuid() const {
  char buf[kNvmlStringBuffer] = {};
  nvml_check(nvml().nvmlDeviceGetUUID(handle_, buf, sizeof buf), "nvmlDeviceGetUUID");
  return buf;
}

namespace {

// One unsigned value from an optional NVML query of a device: 0 where the driver lacks the call or it fails.
unsigned int optional_value(nvmlReturn_t (*query)(nvmlDevice_t, unsigned int*), nvmlDevice_t handle) {
  unsigned int value = 0;
  return query != nullptr && query(handle, &value) == NVML_SUCCESS ? value : 0;
}

}  // namespace

unsigned int NvmlDevice::power_limit_mw() const {
  return optional_value(nvml().nvmlDeviceGetPowerManagementLimit, handle_);
}

unsigned int NvmlDevice::clock_mhz(nvmlClockType_t which) const {
  unsigned int mhz = 0;
  return nvml().nvmlDeviceGetClockInfo(handle_, which, &mhz) == NVML_SUCCESS ? mhz : 0;
}

unsigned int NvmlDevice::pcie_link_generation() const {
  return optional_value(nvml().nvmlDeviceGetCurrPcieLinkGeneration, handle_);
}

unsigned int NvmlDevice::pcie_link_width() const {
  return optional_value(nvml().nvmlDeviceGetCurrPcieLinkWidth, handle_);
}

std::string nvml_driver_version() {
  char buf[kNvmlStringBuffer] = {};
  nvml_check(nvml().nvmlSystemGetDriverVersion(buf, sizeof buf), "nvmlSystemGetDriverVersion");
  return buf;
}

std::string nvml_library_version() {
  const auto& api = nvml();
  char buf[kNvmlStringBuffer] = {};
  if (api.nvmlSystemGetNVMLVersion == nullptr) return "";
  nvml_check(api.nvmlSystemGetNVMLVersion(buf, sizeof buf), "nvmlSystemGetNVMLVersion");
  return buf;
}

unsigned int nvml_device_count() {
  unsigned int n = 0;
  nvml_check(nvml().nvmlDeviceGetCount_v2(&n), "nvmlDeviceGetCount_v2");
  return n;
}

}  // namespace cn
