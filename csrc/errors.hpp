// Typed errors of the native core. The Python layer maps each to an exception
// class (clear_native/errors.py), keeping the NVML or CUDA code.
#pragma once

#include <stdexcept>
#include <string>

namespace cn {

// An NVML call failed. `code` is the nvmlReturn_t; `function` the NVML call.
class NvmlError : public std::runtime_error {
 public:
  NvmlError(int code, std::string function, const std::string& detail)
      : std::runtime_error(function + " failed: " + detail + " (NVML code " +
                           std::to_string(code) + ")"),
        code_(code),
        function_(std::move(function)) {}
  int code() const noexcept { return code_; }
  const std::string& function() const noexcept { return function_; }

 private:
  int code_;
  std::string function_;
};

// A CUDA runtime call failed (see cuda_check.hpp for the macro that raises it).
class CudaError : public std::runtime_error {
 public:
  CudaError(int code, const std::string& what) : std::runtime_error(what), code_(code) {}
  int code() const noexcept { return code_; }

 private:
  int code_;
};

// The caller used an object in a state where the call makes no sense
// (e.g. stop() on a sampler that was never started). Maps to RuntimeError.
class StateError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

}  // namespace cn
