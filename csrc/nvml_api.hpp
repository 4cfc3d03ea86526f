// The subset of NVML's C API that clear_native uses, declared here so that the
// package builds without nvml.h and links nothing of the driver: the library is
// opened with dlopen at run time (see nvml.cpp).
//
// Layouts and values follow NVML's public header (nvml.h, CUDA 13 / driver 580).
#pragma once

#include <cstdint>

extern "C" {

typedef int nvmlReturn_t;  // nvmlReturn_enum: 0 = success, see nvml_error_name()
typedef struct nvmlDevice_st* nvmlDevice_t;

enum : nvmlReturn_t {
  NVML_SUCCESS = 0,
  NVML_ERROR_UNINITIALIZED = 1,
  NVML_ERROR_INVALID_ARGUMENT = 2,
  NVML_ERROR_NOT_SUPPORTED = 3,
  NVML_ERROR_NO_PERMISSION = 4,
  NVML_ERROR_NOT_FOUND = 6,
  NVML_ERROR_INSUFFICIENT_SIZE = 7,
  NVML_ERROR_DRIVER_NOT_LOADED = 9,
  NVML_ERROR_TIMEOUT = 10,
  NVML_ERROR_LIBRARY_NOT_FOUND = 12,
  NVML_ERROR_FUNCTION_NOT_FOUND = 13,
  NVML_ERROR_GPU_IS_LOST = 15,
  NVML_ERROR_UNKNOWN = 999,
};

typedef enum { NVML_TOTAL_POWER_SAMPLES = 0 } nvmlSamplingType_t;
typedef enum { NVML_TEMPERATURE_GPU = 0 } nvmlTemperatureSensors_t;
typedef enum { NVML_CLOCK_GRAPHICS = 0, NVML_CLOCK_SM = 1, NVML_CLOCK_MEM = 2 } nvmlClockType_t;

typedef enum {
  NVML_VALUE_TYPE_DOUBLE = 0,
  NVML_VALUE_TYPE_UNSIGNED_INT = 1,
  NVML_VALUE_TYPE_UNSIGNED_LONG = 2,
  NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = 3,
  NVML_VALUE_TYPE_SIGNED_LONG_LONG = 4,
  NVML_VALUE_TYPE_SIGNED_INT = 5,
} nvmlValueType_t;

typedef union nvmlValue_st {
  double dVal;
  int siVal;
  unsigned int uiVal;
  unsigned long ulVal;
  unsigned long long ullVal;
  signed long long sllVal;
  unsigned short usVal;
} nvmlValue_t;

typedef struct nvmlSample_st {
  unsigned long long timeStamp;  // µs of CLOCK_REALTIME
  nvmlValue_t sampleValue;
} nvmlSample_t;

typedef struct nvmlFieldValue_st {
  unsigned int fieldId;
  unsigned int scopeId;
  long long timestamp;  // µs of CLOCK_REALTIME
  long long latencyUsec;
  nvmlValueType_t valueType;
  nvmlReturn_t nvmlReturn;
  nvmlValue_t value;
} nvmlFieldValue_t;

}  // extern "C"

namespace cn {

constexpr unsigned int kNvmlFieldPowerInstant = 186;  // NVML_FI_DEV_POWER_INSTANT, mW
constexpr unsigned int kNvmlStringBuffer = 96;        // NVML_DEVICE_{NAME,UUID}_V2_BUFFER_SIZE

// Note [NVML symbol table]
// Every NVML function clear_native calls is listed once here, with its type.
// Required symbols must all resolve or loading fails with a typed error;
// optional ones may be missing on older drivers and are checked before use.
#define CN_NVML_REQUIRED_SYMBOLS(X)                                                          \
  X(nvmlInit_v2, nvmlReturn_t (*)(void))                                                     \
  X(nvmlSystemGetDriverVersion, nvmlReturn_t (*)(char*, unsigned int))                      \
  X(nvmlDeviceGetCount_v2, nvmlReturn_t (*)(unsigned int*))                                 \
  X(nvmlDeviceGetHandleByIndex_v2, nvmlReturn_t (*)(unsigned int, nvmlDevice_t*))           \
  X(nvmlDeviceGetHandleByPciBusId_v2, nvmlReturn_t (*)(const char*, nvmlDevice_t*))         \
  X(nvmlDeviceGetName, nvmlReturn_t (*)(nvmlDevice_t, char*, unsigned int))                 \
  X(nvmlDeviceGetUUID, nvmlReturn_t (*)(nvmlDevice_t, char*, unsigned int))                 \
  X(nvmlDeviceGetSamples, nvmlReturn_t (*)(nvmlDevice_t, nvmlSamplingType_t,               \
                                           unsigned long long, nvmlValueType_t*,            \
                                           unsigned int*, nvmlSample_t*))                   \
  X(nvmlDeviceGetTotalEnergyConsumption, nvmlReturn_t (*)(nvmlDevice_t, unsigned long long*)) \
  X(nvmlDeviceGetTemperature, nvmlReturn_t (*)(nvmlDevice_t, nvmlTemperatureSensors_t,     \
                                               unsigned int*))                              \
  X(nvmlDeviceGetClockInfo, nvmlReturn_t (*)(nvmlDevice_t, nvmlClockType_t, unsigned int*))

#define CN_NVML_OPTIONAL_SYMBOLS(X)                                                          \
  X(nvmlSystemGetNVMLVersion, nvmlReturn_t (*)(char*, unsigned int))                        \
  X(nvmlDeviceGetFieldValues, nvmlReturn_t (*)(nvmlDevice_t, int, nvmlFieldValue_t*))       \
  X(nvmlDeviceGetPowerManagementLimit, nvmlReturn_t (*)(nvmlDevice_t, unsigned int*))       \
  X(nvmlDeviceGetCurrentClocksEventReasons, nvmlReturn_t (*)(nvmlDevice_t, unsigned long long*)) \
  X(nvmlDeviceGetCurrentClocksThrottleReasons,                                              \
    nvmlReturn_t (*)(nvmlDevice_t, unsigned long long*))                                    \
  X(nvmlDeviceGetCurrPcieLinkGeneration, nvmlReturn_t (*)(nvmlDevice_t, unsigned int*))     \
  X(nvmlDeviceGetCurrPcieLinkWidth, nvmlReturn_t (*)(nvmlDevice_t, unsigned int*))

}  // namespace cn
