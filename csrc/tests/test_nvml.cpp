#include <doctest/doctest.h>

#include <cstdlib>

#include "errors.hpp"
#include "nvml.hpp"

using namespace cn;

TEST_CASE("a missing NVML library is a typed error, and loading is retried") {
  setenv("CLEAR_NATIVE_NVML_LIBRARY", "/nonexistent/libnvidia-ml.so.1", 1);
  for (int attempt = 0; attempt < 2; ++attempt) {
    try {
      nvml();
      FAIL("expected NvmlError");
    } catch (const NvmlError& e) {
      CHECK(e.code() == NVML_ERROR_LIBRARY_NOT_FOUND);
      CHECK(std::string(e.what()).find("/nonexistent/libnvidia-ml.so.1") != std::string::npos);
    }
  }
  CHECK_THROWS_AS(NvmlDevice::from_nvml_index(0), NvmlError);
  unsetenv("CLEAR_NATIVE_NVML_LIBRARY");
}

TEST_CASE("error names") {
  CHECK(std::string(nvml_error_name(3)) == "Not Supported");
  CHECK(std::string(nvml_error_name(15)) == "GPU is lost");
  CHECK(std::string(nvml_error_name(12345)) == "Unknown Error");
}
