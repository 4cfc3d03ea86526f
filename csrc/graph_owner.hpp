// Ownership of a CUDA graph and its executable, for the classes that make one
// (UnrolledGraph, PrunedGraph): both are destroyed with the owner, also when
// the owner's constructor throws half-way (members are destroyed then too).
#pragma once

#include <cstdint>

struct CUgraph_st;      // cudaGraph_t, without including CUDA's headers here
struct CUgraphExec_st;  // cudaGraphExec_t

namespace cn {

class GraphOwner {
 public:
  GraphOwner() = default;
  ~GraphOwner();  // graph_edit.cu: destroys the executable, then the graph (warnings only)
  GraphOwner(const GraphOwner&) = delete;
  GraphOwner& operator=(const GraphOwner&) = delete;

  // Takes a graph made by the caller; instantiate() makes its executable.
  void own(CUgraph_st* graph) noexcept { graph_ = graph; }
  void instantiate();
  CUgraph_st* graph() const noexcept { return graph_; }
  uintptr_t graph_handle() const noexcept { return reinterpret_cast<uintptr_t>(graph_); }
  uintptr_t exec_handle() const noexcept { return reinterpret_cast<uintptr_t>(exec_); }

 private:
  CUgraph_st* graph_ = nullptr;
  CUgraphExec_st* exec_ = nullptr;
};

}  // namespace cn
