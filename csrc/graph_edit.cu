#include "graph_edit.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <unordered_set>

#include "cuda_check.hpp"

namespace cn {
namespace {

std::vector<cudaGraphNode_t> nodes_of(cudaGraph_t g) {
  size_t n = 0;
  CN_CUDA_CHECK(cudaGraphGetNodes(g, nullptr, &n));
  std::vector<cudaGraphNode_t> nodes(n);
  if (n > 0) CN_CUDA_CHECK(cudaGraphGetNodes(g, nodes.data(), &n));
  nodes.resize(n);
  return nodes;
}

// A node's neighbours with the data of the edges to them. Asking without the
// edge data fails (cudaErrorLossyQuery) where an edge is not a plain one, e.g.
// the programmatic edges of kernels that launch their successor early.
struct Edges {
  std::vector<cudaGraphNode_t> nodes;
  std::vector<cudaGraphEdgeData> data;
};

// cudaGraphNodeGetDependencies or cudaGraphNodeGetDependentNodes.
using EdgeQuery = cudaError_t (*)(cudaGraphNode_t, cudaGraphNode_t*, cudaGraphEdgeData*, size_t*);

Edges edges(cudaGraphNode_t node, EdgeQuery query, const char* what) {
  size_t n = 0;
  cuda_check(query(node, nullptr, nullptr, &n), what, __FILE__, __LINE__);
  Edges e{std::vector<cudaGraphNode_t>(n), std::vector<cudaGraphEdgeData>(n)};
  if (n > 0) cuda_check(query(node, e.nodes.data(), e.data.data(), &n), what, __FILE__, __LINE__);
  e.nodes.resize(n);
  e.data.resize(n);
  return e;
}

Edges dependencies(cudaGraphNode_t node) {
  return edges(node, cudaGraphNodeGetDependencies, "cudaGraphNodeGetDependencies");
}

Edges dependents(cudaGraphNode_t node) {
  return edges(node, cudaGraphNodeGetDependentNodes, "cudaGraphNodeGetDependentNodes");
}

bool removable(cudaGraphNodeType t) {
  return t == cudaGraphNodeTypeKernel || t == cudaGraphNodeTypeMemset || t == cudaGraphNodeTypeMemcpy;
}

// Removes `node` from its graph; its predecessors come before its successors
// instead, through plain edges (a successor waits for its new predecessor to
// finish, the strictest order an edge can ask for).
void remove_bridged(cudaGraph_t g, cudaGraphNode_t node) {
  const auto preds = dependencies(node).nodes;
  const auto succs = dependents(node).nodes;
  for (auto s : succs) {
    const auto have = dependencies(s).nodes;
    for (auto p : preds) {
      if (std::find(have.begin(), have.end(), p) != have.end()) continue;
      CN_CUDA_CHECK(cudaGraphAddDependencies(g, &p, &s, nullptr, 1));
    }
  }
  CN_CUDA_CHECK(cudaGraphDestroyNode(node));
}

}  // namespace

std::vector<uintptr_t> capturing_graph_nodes(uintptr_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  cudaGraph_t g = nullptr;
  CN_CUDA_CHECK(cudaStreamGetCaptureInfo(reinterpret_cast<cudaStream_t>(stream), &status, nullptr, &g));
  if (status != cudaStreamCaptureStatusActive || g == nullptr) {
    throw std::logic_error("the stream is not capturing a CUDA graph: call this from inside torch.cuda.graph()");
  }
  std::vector<uintptr_t> out;
  for (auto n : nodes_of(g)) out.push_back(reinterpret_cast<uintptr_t>(n));
  return out;
}

GraphOwner::~GraphOwner() {
  if (exec_ != nullptr) CN_CUDA_WARN(cudaGraphExecDestroy(exec_));
  if (graph_ != nullptr) CN_CUDA_WARN(cudaGraphDestroy(graph_));
}

void GraphOwner::instantiate() {
  cudaGraphExec_t e = nullptr;
  CN_CUDA_CHECK(cudaGraphInstantiate(&e, graph_, 0));
  exec_ = e;
}

PrunedGraph::PrunedGraph(int device, uintptr_t graph, const std::vector<uintptr_t>& remove) : device_(device) {
  if (graph == 0) throw std::invalid_argument("graph handle is null: capture with keep_graph=True");
  DeviceGuard on(device);
  auto original = reinterpret_cast<cudaGraph_t>(graph);
  std::unordered_set<uintptr_t> in_graph;
  for (auto n : nodes_of(original)) in_graph.insert(reinterpret_cast<uintptr_t>(n));
  std::vector<uintptr_t> wanted;
  for (auto h : std::unordered_set<uintptr_t>(remove.begin(), remove.end())) {
    if (in_graph.count(h) == 0) throw std::invalid_argument("a node to remove is not in the graph");
    cudaGraphNodeType t{};
    CN_CUDA_CHECK(cudaGraphNodeGetType(reinterpret_cast<cudaGraphNode_t>(h), &t));
    if (removable(t)) {
      wanted.push_back(h);
    } else {
      kept_ += 1;
    }
  }
  cudaGraph_t g = nullptr;
  CN_CUDA_CHECK(cudaGraphClone(&g, original));
  owned_.own(g);  // destroyed with this object, also if what follows throws
  for (auto h : wanted) {
    cudaGraphNode_t copy = nullptr;
    CN_CUDA_CHECK(cudaGraphNodeFindInClone(&copy, reinterpret_cast<cudaGraphNode_t>(h), g));
    remove_bridged(g, copy);
    removed_ += 1;
  }
  nodes_left_ = static_cast<int64_t>(nodes_of(g).size());
  owned_.instantiate();
}

std::vector<int64_t> graph_node_kinds(uintptr_t graph) {
  if (graph == 0) throw std::invalid_argument("graph handle is null");
  std::vector<int64_t> counts(4, 0);
  for (auto n : nodes_of(reinterpret_cast<cudaGraph_t>(graph))) {
    cudaGraphNodeType t{};
    CN_CUDA_CHECK(cudaGraphNodeGetType(n, &t));
    counts[t == cudaGraphNodeTypeKernel ? 0 : t == cudaGraphNodeTypeMemset ? 1 : t == cudaGraphNodeTypeMemcpy ? 2 : 3] += 1;
  }
  return counts;
}

}  // namespace cn
