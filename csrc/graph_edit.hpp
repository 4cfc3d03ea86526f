// Editing captured CUDA graphs: which nodes a stretch of capture added, and a
// copy of a graph without some of its nodes (Note [A component in context]).
//
// Note [A component in context]
// A component replayed alone is measured at the power state it puts the GPU in
// by itself. Inside the model its kernels run between other kernels, under the
// clocks and power limit the whole forward pass sets: measured on an H200, a
// Llama-3.2-1B decoder layer at batch 8 x 128 drew 663 W while its parts alone
// drew 505-725 W and added up to 87 % of it. The model's own graph can say what
// a component costs where it runs: record which graph nodes each component's
// forward added while the model was captured, then replay the model's graph
// without them. The model's energy minus that graph's is the component's energy
// in context, at the model's clocks, temperature and power limit.
//
// Removing a node keeps the order of everything else: its predecessors become
// predecessors of its successors. The kernels left read what the removed ones
// last wrote (the buffers persist from replay to replay), so they do the same
// work on data of the same kind.
#pragma once

#include <cstdint>
#include <vector>

#include "graph_owner.hpp"

struct CUgraph_st;      // cudaGraph_t
struct CUgraphExec_st;  // cudaGraphExec_t

namespace cn {

// The nodes of the graph `stream` is capturing into, now (handles as integers).
// Throws std::logic_error when the stream is not capturing.
std::vector<uintptr_t> capturing_graph_nodes(uintptr_t stream);

// A copy of `graph` without the kernel, memset and memcpy nodes among `remove`
// (nodes of `graph`), instantiated. Other nodes among `remove` (event records,
// child graphs...) only order work: they are kept and counted in kept(). A
// node not in `graph` is an std::invalid_argument. Owns its graph and
// executable; `graph` may be destroyed after construction.
class PrunedGraph {
 public:
  PrunedGraph(int device, uintptr_t graph, const std::vector<uintptr_t>& remove);
  PrunedGraph(const PrunedGraph&) = delete;
  PrunedGraph& operator=(const PrunedGraph&) = delete;
  uintptr_t graph_handle() const noexcept { return owned_.graph_handle(); }
  uintptr_t exec_handle() const noexcept { return owned_.exec_handle(); }
  int device() const noexcept { return device_; }
  int64_t removed() const noexcept { return removed_; }
  int64_t kept() const noexcept { return kept_; }
  int64_t nodes_left() const noexcept { return nodes_left_; }

 private:
  int device_;
  int64_t removed_ = 0;
  int64_t kept_ = 0;
  int64_t nodes_left_ = 0;
  GraphOwner owned_;
};

// How many nodes of each kind `graph` holds: {kernel, memset, memcpy, other}.
std::vector<int64_t> graph_node_kinds(uintptr_t graph);

}  // namespace cn
