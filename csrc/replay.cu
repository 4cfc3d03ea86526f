#include "replay.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>

#include "clock.hpp"
#include "cuda_check.hpp"

namespace cn {
namespace {

void CUDART_CB stamp_now(void* slot) { *static_cast<int64_t*>(slot) = monotonic_ns(); }

// Events and device selection that clean up even when a launch throws.
class EventPair {
 public:
  EventPair() {
    CN_CUDA_CHECK(cudaEventCreate(&start));
    try {
      CN_CUDA_CHECK(cudaEventCreate(&end));
    } catch (...) {
      CN_CUDA_WARN(cudaEventDestroy(start));
      throw;
    }
  }
  ~EventPair() {
    CN_CUDA_WARN(cudaEventDestroy(start));
    CN_CUDA_WARN(cudaEventDestroy(end));
  }
  cudaEvent_t start = nullptr, end = nullptr;
};

// Timing events for every launch of a replay; destroyed with the pool.
class EventPool {
 public:
  explicit EventPool(int64_t n) {
    events_.reserve(static_cast<std::size_t>(n));
    try {
      for (int64_t i = 0; i < n; ++i) {
        cudaEvent_t e = nullptr;
        CN_CUDA_CHECK(cudaEventCreate(&e));
        events_.push_back(e);
      }
    } catch (...) {
      release();
      throw;
    }
  }
  ~EventPool() { release(); }
  EventPool(const EventPool&) = delete;
  EventPool& operator=(const EventPool&) = delete;
  cudaEvent_t operator[](std::size_t i) const { return events_[i]; }
  bool empty() const noexcept { return events_.empty(); }

 private:
  void release() noexcept {
    for (auto e : events_) CN_CUDA_WARN(cudaEventDestroy(e));
    events_.clear();
  }
  std::vector<cudaEvent_t> events_;
};

__global__ void busy_kernel(unsigned long long duration_ns, float* sink) {
  unsigned long long start, now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  float a0 = threadIdx.x, a1 = a0 + 1, a2 = a0 + 2, a3 = a0 + 3;
  const float b = 0.999999f, c = 1e-7f;
  do {
#pragma unroll 64
    for (int i = 0; i < 256; ++i) {
      a0 = fmaf(a0, b, c);
      a1 = fmaf(a1, b, c);
      a2 = fmaf(a2, b, c);
      a3 = fmaf(a3, b, c);
    }
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  } while (now - start < duration_ns);
  if (sink != nullptr && a0 + a1 + a2 + a3 == -1.0f) *sink = a0;  // keeps the FMAs alive
}

__global__ void empty_kernel() {}

// Stamps the host clock when the stream starts what `enqueue` enqueues and again
// when it has finished it; times it with events; waits for the stream.
template <class Enqueue>
ReplayTiming timed_on_stream(cudaStream_t s, Enqueue&& enqueue) {
  EventPair events;
  ReplayTiming t;
  CN_CUDA_CHECK(cudaLaunchHostFunc(s, stamp_now, &t.host_start_ns));
  try {
    CN_CUDA_CHECK(cudaEventRecord(events.start, s));
    t.launches = enqueue();
    CN_CUDA_CHECK(cudaEventRecord(events.end, s));
    CN_CUDA_CHECK(cudaLaunchHostFunc(s, stamp_now, &t.host_end_ns));
    CN_CUDA_CHECK(cudaStreamSynchronize(s));
  } catch (...) {
    // The host callbacks queued above write into `t`: let the stream finish before `t` goes.
    CN_CUDA_WARN(cudaStreamSynchronize(s));
    throw;
  }
  float ms = 0.0f;
  CN_CUDA_CHECK(cudaEventElapsedTime(&ms, events.start, events.end));
  t.gpu_time_s = ms * 1e-3;
  return t;
}

}  // namespace

ReplayTiming replay_graph_exec(int device, uintptr_t exec, uintptr_t stream, int64_t launches, int64_t check_every,
                               const std::function<bool()>& should_stop, bool stamp_launches) {
  if (exec == 0) throw std::invalid_argument("graph exec handle is null: instantiate the graph first");
  if (launches < 1) throw std::invalid_argument("launches must be >= 1");
  if (check_every < 1) throw std::invalid_argument("check_every must be >= 1");
  if (stamp_launches && launches > kMaxStampedLaunches) {
    throw std::invalid_argument("stamp_launches allows at most " + std::to_string(kMaxStampedLaunches) +
                                " launches per replay: unroll the graph more instead");
  }
  DeviceGuard on(device);
  auto graph_exec = reinterpret_cast<cudaGraphExec_t>(exec);
  auto s = reinterpret_cast<cudaStream_t>(stream);
  bool interrupted = false;
  EventPool stamps(stamp_launches ? launches + 1 : 0);  // [0]: before the first launch
  int64_t issued = 0;
  ReplayTiming t = timed_on_stream(s, [&]() -> int64_t {
    if (!stamps.empty()) CN_CUDA_CHECK(cudaEventRecord(stamps[0], s));
    while (issued < launches) {
      CN_CUDA_CHECK(cudaGraphLaunch(graph_exec, s));
      issued += 1;
      if (!stamps.empty()) CN_CUDA_CHECK(cudaEventRecord(stamps[static_cast<std::size_t>(issued)], s));
      if (issued % check_every == 0 && should_stop && should_stop()) {
        interrupted = true;
        break;
      }
    }
    return issued;
  });
  t.interrupted = interrupted;
  if (!stamps.empty()) {
    t.launch_end_s.reserve(static_cast<std::size_t>(issued));
    for (int64_t i = 1; i <= issued; ++i) {
      float ms = 0.0f;
      CN_CUDA_CHECK(cudaEventElapsedTime(&ms, stamps[0], stamps[static_cast<std::size_t>(i)]));
      t.launch_end_s.push_back(ms * 1e-3);
    }
  }
  return t;
}

UnrolledGraph::UnrolledGraph(int device, uintptr_t graph, int copies)
    : UnrolledGraph(device, std::vector<uintptr_t>{graph}, copies) {}

UnrolledGraph::UnrolledGraph(int device, const std::vector<uintptr_t>& graphs, int copies)
    : device_(device), copies_(copies), instances_(static_cast<int>(graphs.size())) {
  if (graphs.empty()) throw std::invalid_argument("graphs is empty: give at least one graph handle");
  for (uintptr_t h : graphs) {
    if (h == 0) throw std::invalid_argument("graph handle is null: capture with keep_graph=True");
  }
  if (copies < 1) throw std::invalid_argument("copies must be >= 1");
  DeviceGuard on(device);
  cudaGraph_t g = nullptr;
  CN_CUDA_CHECK(cudaGraphCreate(&g, 0));
  owned_.own(g);  // destroyed with this object, also if what follows throws
  cudaGraphNode_t prev = nullptr;
  for (int i = 0; i < copies; ++i) {
    auto child = reinterpret_cast<cudaGraph_t>(graphs[static_cast<std::size_t>(i) % graphs.size()]);
    cudaGraphNode_t node = nullptr;
    CN_CUDA_CHECK(cudaGraphAddChildGraphNode(&node, g, prev ? &prev : nullptr, prev ? 1 : 0, child));
    prev = node;
  }
  owned_.instantiate();
}

ReplayTiming calibration_load(int device, uintptr_t stream, double duration_s, int sms) {
  if (!(duration_s > 0) || duration_s > 60) throw std::invalid_argument("duration_s must be in (0, 60]");
  DeviceGuard on(device);
  cudaDeviceProp prop{};
  CN_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  if (sms < 1 || sms > prop.multiProcessorCount) {
    throw std::invalid_argument("sms must be in [1, " + std::to_string(prop.multiProcessorCount) + "]");
  }
  // Note [One block per SM]: a block that asks for more than half of an SM's
  // shared memory cannot share the SM, so `sms` blocks land on `sms` SMs.
  const int smem = static_cast<int>(std::min<size_t>(prop.sharedMemPerBlockOptin, prop.sharedMemPerMultiprocessor / 2 + 1024));
  CN_CUDA_CHECK(cudaFuncSetAttribute(busy_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const auto ns = static_cast<unsigned long long>(duration_s * 1e9);
  auto s = reinterpret_cast<cudaStream_t>(stream);
  return timed_on_stream(s, [&]() -> int64_t {
    busy_kernel<<<sms, 1024, smem, s>>>(ns, nullptr);
    CN_CUDA_CHECK(cudaGetLastError());
    return 1;
  });
}

ReplayTiming awake_idle(int device, uintptr_t stream, double duration_s) {
  if (!(duration_s > 0) || duration_s > 600) throw std::invalid_argument("duration_s must be in (0, 600]");
  DeviceGuard on(device);
  auto s = reinterpret_cast<cudaStream_t>(stream);
  return timed_on_stream(s, [&]() -> int64_t {
    const int64_t until = monotonic_ns() + static_cast<int64_t>(duration_s * 1e9);
    int64_t launched = 0;
    do {
      for (int i = 0; i < 256; ++i) empty_kernel<<<1, 1, 0, s>>>();
      launched += 256;
      CN_CUDA_CHECK(cudaGetLastError());
    } while (monotonic_ns() < until);
    return launched;
  });
}

CudaDeviceInfo cuda_device_info(int device) {
  cudaDeviceProp prop{};
  CN_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  char bus[32] = {};
  CN_CUDA_CHECK(cudaDeviceGetPCIBusId(bus, sizeof bus, device));
  return CudaDeviceInfo{prop.name, bus, prop.multiProcessorCount, prop.major * 10 + prop.minor};
}

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

int cuda_runtime_version() {
  int v = 0;
  CN_CUDA_CHECK(cudaRuntimeGetVersion(&v));
  return v;
}

}  // namespace cn
