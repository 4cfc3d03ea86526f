// One error check for the CUDA runtime: file:line, the call's text and the
// error's name, and CUDA's sticky last error cleared. CN_CUDA_CHECK throws
// cn::CudaError; CN_CUDA_WARN only reports (for destructors).
#pragma once

#include <cuda_runtime.h>

#include <cstdio>
#include <string>

#include "errors.hpp"

namespace cn {

inline void cuda_check(cudaError_t code, const char* call, const char* file, int line) {
  if (code == cudaSuccess) return;
  cudaGetLastError();  // clear the sticky error so later calls are judged on their own
  throw CudaError(static_cast<int>(code), std::string(file) + ":" + std::to_string(line) + ": " + call +
                                              " failed: " + cudaGetErrorName(code) + " (" +
                                              cudaGetErrorString(code) + ")");
}

inline void cuda_warn(cudaError_t code, const char* call, const char* file, int line) noexcept {
  if (code == cudaSuccess) return;
  cudaGetLastError();
  std::fprintf(stderr, "clear_native: %s:%d: %s failed: %s\n", file, line, call, cudaGetErrorName(code));
}

}  // namespace cn

#define CN_CUDA_CHECK(expr) ::cn::cuda_check((expr), #expr, __FILE__, __LINE__)
#define CN_CUDA_WARN(expr) ::cn::cuda_warn((expr), #expr, __FILE__, __LINE__)

namespace cn {

// Makes `device` the current CUDA device for a scope and gives the caller's
// device back when the scope ends, also when it ends by a throw: native calls
// never leave another device current behind the caller's back (PyTorch's
// current device, say).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    CN_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) CN_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() {
    int now = -1;
    if (cudaGetDevice(&now) == cudaSuccess && now != previous_) CN_CUDA_WARN(cudaSetDevice(previous_));
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace cn
