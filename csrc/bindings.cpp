// Python bindings of the native core (module clear_native._core). Everything
// that blocks releases the GIL; results come back as numpy arrays.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "clock.hpp"
#include "errors.hpp"
#include "nvml.hpp"
#include "nvml_source.hpp"
#include "sampler.hpp"
#include "synthetic.hpp"
#ifdef CN_HAVE_CUDA
#include "graph_edit.hpp"
#include "replay.hpp"
#endif

namespace py = pybind11;
using namespace pybind11::literals;

namespace {

// Turns a native error into the exception class clear_native.errors picks for
// it (one table there: Note [NVML error table]).
void raise_python(const char* kind, int code, const std::string& function, const char* message) {
  try {
    py::object exc = py::module_::import("clear_native.errors").attr("_from_native")(kind, code, function, message);
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
  } catch (py::error_already_set& e) {
    e.restore();
  }
}

template <class T, class Rows, class Get>
py::array_t<T> column(const Rows& rows, std::size_t n, Get get) {
  py::array_t<T> out(static_cast<py::ssize_t>(n));
  auto view = out.template mutable_unchecked<1>();
  for (std::size_t i = 0; i < n; ++i) view(static_cast<py::ssize_t>(i)) = static_cast<T>(get(rows[i]));
  return out;
}

double unavailable_to_nan(uint32_t v) { return v == cn::kUnavailable32 ? std::nan("") : static_cast<double>(v); }

// Rows so far (Note [Reading while running]); the statistics only once stopped.
py::dict sampler_result(const cn::Sampler& s) {
  const auto& p = s.power();
  const auto& e = s.energy();
  const auto& st = s.status();
  const auto& g = s.gaps();
  const std::size_t np = s.power_count(), ne = s.energy_count(), ns = s.status_count(), ng = s.gap_count();
  const cn::SamplerStats stats = s.running() ? cn::SamplerStats{} : s.stats();
  py::dict d;
  d["power_t_ns"] = column<int64_t>(p, np, [](const cn::PowerRow& r) { return r.t_ns; });
  d["power_wall_us"] = column<int64_t>(p, np, [](const cn::PowerRow& r) { return r.wall_us; });
  d["power_mw"] = column<double>(p, np, [](const cn::PowerRow& r) { return r.power_mw; });
  d["energy_t_ns"] = column<int64_t>(e, ne, [](const cn::EnergyRow& r) { return r.t_ns; });
  d["energy_mj"] = column<uint64_t>(e, ne, [](const cn::EnergyRow& r) { return r.energy_mj; });
  d["energy_call_ns"] = column<int64_t>(e, ne, [](const cn::EnergyRow& r) { return r.call_ns; });
  d["status_t_ns"] = column<int64_t>(st, ns, [](const cn::StatusRow& r) { return r.t_ns; });
  d["instant_power_mw"] = column<double>(st, ns, [](const cn::StatusRow& r) { return unavailable_to_nan(r.reading.instant_power_mw); });
  d["temperature_c"] = column<double>(st, ns, [](const cn::StatusRow& r) { return unavailable_to_nan(r.reading.temperature_c); });
  d["sm_clock_mhz"] = column<double>(st, ns, [](const cn::StatusRow& r) { return unavailable_to_nan(r.reading.sm_clock_mhz); });
  d["clock_event_reasons"] = column<uint64_t>(st, ns, [](const cn::StatusRow& r) { return r.reading.clock_event_reasons; });
  d["gap_after_ns"] = column<int64_t>(g, ng, [](const cn::Gap& r) { return r.after_ns; });
  d["gap_before_ns"] = column<int64_t>(g, ng, [](const cn::Gap& r) { return r.before_ns; });
  d["gap_lost"] = column<int64_t>(g, ng, [](const cn::Gap& r) { return r.lost; });
  d["gap_overflow"] = column<bool>(g, ng, [](const cn::Gap& r) { return r.overflow; });
  d["start_ns"] = s.stats().start_ns;  // settled once start() returned
  d["stop_ns"] = stats.stop_ns;
  d["drains"] = stats.drains;
  d["duplicates"] = stats.duplicates;
  d["max_drain_interval_ns"] = stats.max_drain_interval_ns;
  d["fast_thread_cpu_s"] = stats.fast_thread_cpu_s;
  d["energy_thread_cpu_s"] = stats.energy_thread_cpu_s;
  d["clock_offset_ns"] = s.stats().clock_at_start.wall_minus_mono_ns;
  d["clock_offset_uncertainty_ns"] = s.stats().clock_at_start.uncertainty_ns;
  d["clock_drift_ns"] = stats.clock_at_stop.wall_minus_mono_ns - stats.clock_at_start.wall_minus_mono_ns;
  d["driver_buffer_capacity"] = s.stats().driver_buffer_capacity;
  return d;
}

#ifdef CN_HAVE_CUDA
py::dict timing_dict(const cn::ReplayTiming& t) {
  return py::dict("gpu_time_s"_a = t.gpu_time_s, "launches"_a = t.launches, "host_start_ns"_a = t.host_start_ns,
                  "host_end_ns"_a = t.host_end_ns, "launch_end_s"_a = t.launch_end_s);
}
#endif

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "clear_native's native core: NVML sampler, synthetic sensor, CUDA-graph replay";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const cn::NvmlError& e) {
      raise_python("nvml", e.code(), e.function(), e.what());
    } catch (const cn::CudaError& e) {
      raise_python("cuda", e.code(), "", e.what());
    } catch (const cn::CapacityError& e) {
      raise_python("capacity", 0, "", e.what());
    } catch (const cn::StateError& e) {
      raise_python("state", 0, "", e.what());
    }
  });

  m.def("monotonic_ns", &cn::monotonic_ns,
        "The clock every stamp is on, in ns: the host's CLOCK_MONOTONIC, or the virtual clock (Note [Virtual time]).");
  m.def("use_virtual_clock", &cn::use_virtual_clock, "start_ns"_a,
        "From now on monotonic_ns() is a counter that only advance_virtual_clock() moves (the synthetic sensor only).");
  m.def("use_real_clock", &cn::use_real_clock);
  m.def("on_virtual_clock", &cn::on_virtual_clock);
  m.def("advance_virtual_clock", &cn::advance_virtual_clock, "ns"_a,
        "Moves the virtual clock forward, running each sampler's work at its deadlines on the way.");
  m.def("nvml_error_name", &cn::nvml_error_name, "code"_a);
  m.def("nvml_driver_version", &cn::nvml_driver_version);
  m.def("nvml_library_version", &cn::nvml_library_version);
  m.def("nvml_device_count", &cn::nvml_device_count);
  m.def("_raise_native_error", [](const std::string& kind, int code) {
    // For tests of the error table: raise what a failing native call would.
    if (kind == "nvml") throw cn::NvmlError(code, "nvmlTestCall", cn::nvml_error_name(code));
    if (kind == "cuda") throw cn::CudaError(code, "cudaTestCall failed");
    if (kind == "capacity") throw cn::CapacityError("buffer full");
    throw cn::StateError("bad state");
  });

  py::class_<cn::NvmlDevice>(m, "NvmlDevice")
      .def_static("from_pci_bus_id", &cn::NvmlDevice::from_pci_bus_id, "pci_bus_id"_a)
      .def_static("from_nvml_index", &cn::NvmlDevice::from_nvml_index, "index"_a)
      .def_property_readonly("name", &cn::NvmlDevice::name)
      .def_property_readonly("uuid", &cn::NvmlDevice::uuid)
      .def_property_readonly("pci_bus_id", &cn::NvmlDevice::pci_bus_id)
      .def_property_readonly("power_limit_mw", &cn::NvmlDevice::power_limit_mw)
      .def_property_readonly("sm_clock_mhz", [](const cn::NvmlDevice& d) { return d.clock_mhz(NVML_CLOCK_SM); })
      .def_property_readonly("memory_clock_mhz", [](const cn::NvmlDevice& d) { return d.clock_mhz(NVML_CLOCK_MEM); })
      .def_property_readonly("pcie_link_generation", &cn::NvmlDevice::pcie_link_generation)
      .def_property_readonly("pcie_link_width", &cn::NvmlDevice::pcie_link_width);

  py::class_<cn::PowerSource, std::shared_ptr<cn::PowerSource>>(m, "PowerSource")
      .def("describe", &cn::PowerSource::describe)
      .def_property_readonly("sample_buffer_capacity", &cn::PowerSource::sample_buffer_capacity)
      .def("read_energy_mj", &cn::PowerSource::read_energy_mj, py::call_guard<py::gil_scoped_release>())
      .def("wall_now_ns", &cn::PowerSource::wall_now_ns);

  py::class_<cn::NvmlSource, cn::PowerSource, std::shared_ptr<cn::NvmlSource>>(m, "NvmlSource")
      .def(py::init<cn::NvmlDevice>(), "device"_a);

  py::class_<cn::SyntheticParams>(m, "SyntheticParams")
      .def(py::init<>())
#define CN_FIELD(name) .def_readwrite(#name, &cn::SyntheticParams::name)
      CN_FIELD(sample_period_s) CN_FIELD(period_jitter_s) CN_FIELD(window_s) CN_FIELD(lag_s) CN_FIELD(noise_w)
      CN_FIELD(buffer_size) CN_FIELD(energy_update_s) CN_FIELD(energy_read_delay_s) CN_FIELD(status_update_s)
      CN_FIELD(idle_w) CN_FIELD(overshoot_fraction) CN_FIELD(overshoot_s) CN_FIELD(wall_offset_ns) CN_FIELD(restamp_us) CN_FIELD(seed)
      CN_FIELD(fail_after_reads) CN_FIELD(fail_code) CN_FIELD(temperature_c) CN_FIELD(thermal_c_per_w)
      CN_FIELD(thermal_tau_s) CN_FIELD(sm_clock_mhz);
#undef CN_FIELD

  py::class_<cn::SyntheticSource, cn::PowerSource, std::shared_ptr<cn::SyntheticSource>>(m, "SyntheticSource")
      .def(py::init<cn::SyntheticParams>(), "params"_a)
      .def("set_power", &cn::SyntheticSource::set_power, "watts"_a, "at_ns"_a = -1)
      .def("true_energy_j", &cn::SyntheticSource::true_energy_j, "t0_ns"_a, "t1_ns"_a)
      .def("true_power_w", &cn::SyntheticSource::true_power_w, "t_ns"_a)
      .def("true_temperature_c", &cn::SyntheticSource::true_temperature_c, "t_ns"_a)
      .def("sample_time_ns", &cn::SyntheticSource::sample_time_ns, "k"_a)
      .def("sample_stamp_us", &cn::SyntheticSource::sample_stamp_us, "k"_a)
      .def_property_readonly("origin_ns", &cn::SyntheticSource::origin_ns)
      .def_property_readonly("params", &cn::SyntheticSource::params);

  py::class_<cn::SamplerConfig>(m, "SamplerConfig")
      .def(py::init<>())
#define CN_FIELD(name) .def_readwrite(#name, &cn::SamplerConfig::name)
      CN_FIELD(drain_interval_s) CN_FIELD(status_interval_s) CN_FIELD(energy_interval_s) CN_FIELD(max_power_samples)
      CN_FIELD(max_status_rows) CN_FIELD(max_energy_rows) CN_FIELD(max_gaps) CN_FIELD(gap_factor);
#undef CN_FIELD

  py::class_<cn::Sampler>(m, "Sampler")
      .def(py::init<std::shared_ptr<cn::PowerSource>, cn::SamplerConfig>(), "source"_a, "config"_a)
      .def("start", &cn::Sampler::start, py::call_guard<py::gil_scoped_release>())
      .def("stop", &cn::Sampler::stop, py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("running", &cn::Sampler::running)
      .def("rethrow_error", &cn::Sampler::rethrow_error)
      .def("request_drain", &cn::Sampler::request_drain)
      .def("newest_sample_ns", [](const cn::Sampler& s) -> int64_t {
        const std::size_t n = s.power_count();
        return n == 0 ? INT64_MIN : s.power()[n - 1].t_ns;
      }, "Monotonic stamp of the newest sample collected so far (INT64_MIN if none).")
      .def("result", &sampler_result, "The rows of the last start()..stop(), as numpy arrays.");

#ifdef CN_HAVE_CUDA
  m.attr("HAS_CUDA") = true;
  m.def(
      "replay",
      [](int device, uintptr_t exec, uintptr_t stream, int64_t launches, int64_t check_every, bool stamp_launches) {
        auto interrupted = [] {
          py::gil_scoped_acquire gil;
          return PyErr_CheckSignals() != 0;
        };
        cn::ReplayTiming t;
        {
          py::gil_scoped_release release;
          t = cn::replay_graph_exec(device, exec, stream, launches, check_every, interrupted, stamp_launches);
        }
        if (t.interrupted) throw py::error_already_set();  // KeyboardInterrupt (or what the handler raised)
        return timing_dict(t);
      },
      "device"_a, "exec_handle"_a, "stream"_a, "launches"_a, "check_every"_a = 256,
      "stamp_launches"_a = false);
  py::class_<cn::UnrolledGraph>(m, "UnrolledGraph")
      .def(py::init<int, uintptr_t, int>(), "device"_a, "graph_handle"_a, "copies"_a,
           py::call_guard<py::gil_scoped_release>())
      .def(py::init<int, const std::vector<uintptr_t>&, int>(), "device"_a, "graph_handles"_a, "copies"_a,
           py::call_guard<py::gil_scoped_release>(),
           "Node i a copy of graph_handles[i % len(graph_handles)] (Note [Graph instances]).")
      .def_property_readonly("instances", &cn::UnrolledGraph::instances)
      .def_property_readonly("exec_handle", &cn::UnrolledGraph::exec_handle)
      .def_property_readonly("copies", &cn::UnrolledGraph::copies)
      .def_property_readonly("device", &cn::UnrolledGraph::device);
  m.def("capturing_graph_nodes", &cn::capturing_graph_nodes, "stream"_a,
        "The nodes (integer handles) of the graph `stream` is capturing into, now.");
  m.def("graph_node_kinds", &cn::graph_node_kinds, "graph_handle"_a,
        "[kernel, memset, memcpy, other] node counts of a graph.");
  py::class_<cn::PrunedGraph>(m, "PrunedGraph")
      .def(py::init<int, uintptr_t, const std::vector<uintptr_t>&>(), "device"_a, "graph_handle"_a, "remove"_a,
           py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("graph_handle", &cn::PrunedGraph::graph_handle)
      .def_property_readonly("exec_handle", &cn::PrunedGraph::exec_handle)
      .def_property_readonly("device", &cn::PrunedGraph::device)
      .def_property_readonly("removed", &cn::PrunedGraph::removed)
      .def_property_readonly("kept", &cn::PrunedGraph::kept)
      .def_property_readonly("nodes_left", &cn::PrunedGraph::nodes_left);
  m.def("calibration_load", [](int device, uintptr_t stream, double duration_s, int sms) {
    cn::ReplayTiming t;
    {
      py::gil_scoped_release release;
      t = cn::calibration_load(device, stream, duration_s, sms);
    }
    return timing_dict(t);
  }, "device"_a, "stream"_a, "duration_s"_a, "sms"_a);
  m.def("awake_idle", [](int device, uintptr_t stream, double duration_s) {
    cn::ReplayTiming t;
    {
      py::gil_scoped_release release;
      t = cn::awake_idle(device, stream, duration_s);
    }
    return timing_dict(t);
  }, "device"_a, "stream"_a, "duration_s"_a);
  m.def("cuda_device_info", [](int device) {
    const auto info = cn::cuda_device_info(device);
    return py::dict("name"_a = info.name, "pci_bus_id"_a = info.pci_bus_id,
                    "multiprocessors"_a = info.multiprocessors, "compute_capability"_a = info.compute_capability);
  }, "device"_a);
  m.def("cuda_device_count", &cn::cuda_device_count);
  m.def("cuda_runtime_version", &cn::cuda_runtime_version);
#else
  m.attr("HAS_CUDA") = false;
#endif
}
