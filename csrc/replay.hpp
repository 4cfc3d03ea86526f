// Replaying CUDA graphs back-to-back from C++ (Note [Why replay natively]).
//
// Note [Why replay natively]
// A component that runs for 5 µs is invisible to a sensor that reports every
// 20 ms: it must run ~100,000 times back-to-back for a steady 1-2 s window. A
// Python loop of launches leaves the GPU idle most of the time (FINDINGS.md:
// busy 10-40 %), so the "energy per call" it reports is mostly idle power.
// Launching from C++ removes the interpreter; unrolling K copies of the graph
// into one graph (child-graph nodes in a chain) removes most of the per-launch
// gap as well. The per-call GPU time depends on how the calls are launched, so
// it is measured (CUDA events) for the very launches whose power is sampled.
//
// Handles come in as integers (cudaGraph_t, cudaGraphExec_t, cudaStream_t):
// the native layer knows nothing about PyTorch.
#pragma once

#include "graph_owner.hpp"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

struct CUgraph_st;      // cudaGraph_t, without including CUDA's headers here
struct CUgraphExec_st;  // cudaGraphExec_t

namespace cn {

struct ReplayTiming {
  double gpu_time_s = 0.0;     // CUDA events around every launch issued
  int64_t launches = 0;        // graph launches issued
  int64_t host_start_ns = 0;   // monotonic time at which the stream reached the first launch
  int64_t host_end_ns = 0;     // ... and finished the last one
  bool interrupted = false;    // should_stop() asked to stop before all launches were issued
  // With per-launch stamps (Note [Time the window's launches]): GPU seconds from the
  // start of the first launch to the end of each launch, one entry per launch issued.
  std::vector<double> launch_end_s;
};

// Note [Time the window's launches]
// Power is averaged over a trial's steady window only (after the settle time,
// before the tail), so the GPU time per call it multiplies must come from the
// launches inside that window, not from the whole trial: where the clocks move
// within a trial (power capping, boost), the two spans differ. Replays made for
// the protocol therefore record an event after every launch; the protocol maps
// the launch ends onto the host clock (from the trial's start stamp) and takes
// the launches that lie inside the window.

// Launches `exec` on `stream` `launches` times without returning to the caller;
// every `check_every` launches asks `should_stop` (e.g. for Ctrl-C). Blocks
// until the stream has finished the launches. With `stamp_launches`, also times
// every launch (Note [Time the window's launches]); at most kMaxStampedLaunches.
constexpr int64_t kMaxStampedLaunches = 1 << 20;
ReplayTiming replay_graph_exec(int device, uintptr_t exec, uintptr_t stream, int64_t launches,
                               int64_t check_every, const std::function<bool()>& should_stop,
                               bool stamp_launches = false);

// A graph made of `copies` child-graph nodes in a chain, node i a copy of
// graphs[i % graphs.size()] (the instances of one call, Note [Graph instances]
// in clear_native/instances.py), and its executable. Owns both.
class UnrolledGraph {
 public:
  UnrolledGraph(int device, uintptr_t graph, int copies);
  UnrolledGraph(int device, const std::vector<uintptr_t>& graphs, int copies);
  UnrolledGraph(const UnrolledGraph&) = delete;
  UnrolledGraph& operator=(const UnrolledGraph&) = delete;
  uintptr_t exec_handle() const noexcept { return owned_.exec_handle(); }
  int copies() const noexcept { return copies_; }
  int device() const noexcept { return device_; }
  int instances() const noexcept { return instances_; }

 private:
  int device_;
  int copies_;
  int instances_;
  GraphOwner owned_;
};

// Runs a compute-bound kernel on `stream` that keeps `sms` multiprocessors (one
// block each) busy with FMA chains for `duration_s`, and waits for it. The
// timing's launches is 1; its host stamps say when the kernel ran.
ReplayTiming calibration_load(int device, uintptr_t stream, double duration_s, int sms);

// Launches empty kernels (one block of one thread) back-to-back on `stream`
// for `duration_s`: the GPU awake and launching, doing no work. Waits for them.
ReplayTiming awake_idle(int device, uintptr_t stream, double duration_s);

struct CudaDeviceInfo {
  std::string name;
  std::string pci_bus_id;    // "0000:65:00.0", for NVML
  int multiprocessors = 0;
  int compute_capability = 0;  // major * 10 + minor
};
CudaDeviceInfo cuda_device_info(int device);
int cuda_device_count();       // 0 where there is no driver or no GPU
int cuda_runtime_version();

}  // namespace cn
