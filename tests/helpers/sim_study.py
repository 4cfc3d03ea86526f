"""bench/run.py with its GPU work simulated, for tests that kill it (tests/test_crash.py).

Everything bench/run.py does with the records is real: the run folder, the appends, --resume,
the report. Only what needs a GPU is replaced: each task "measures" for a random 5-60 ms
and returns a small report. Run as: python tests/helpers/sim_study.py <bench/run.py arguments>.
"""

import contextlib
import os
import random
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import clear_native as cn  # noqa: E402
from bench import preflight, run, tasks  # noqa: E402
from clear_native.accounting import account  # noqa: E402
from clear_native.protocol import PROTOCOL_VERSION  # noqa: E402
from clear_native.results import GroupResult, ModelReport  # noqa: E402

PROFILE = cn.SensorProfile("GPU-sim-driver-1", 0.02, 0.021, 0.009, 0.009, 0.43, 1.3, 0.1, 77.0, 250.0, "now")
rng = random.Random(os.getpid())


def measure_task(lab, task, profile, args):
    time.sleep(rng.uniform(0.005, 0.06))
    g = GroupResult("layer", "mlp", ["layer"], 4, 1e-5, 1e-3, 5e-4, 0.003, 0.004, 5, 10**9, 10**6, 1e-12, 0.4)
    acc = account([g], 1e-2, 5e-5, 4.5e-5, 4e-5, 100.0)
    whole = dict(energy_per_call_j=1e-2, energy_per_call_ci95_j=3e-5, gpu_time_per_call_s=5e-5, cv=0.003,
                 ci95_rel=0.003)
    return ModelReport(task.model, task.mode, {}, [g], whole, acc, [], {}, 0.1,
                       settings=dict(whole_model_eager=False, l2=args.l2)).to_dict()


fake_torch = types.SimpleNamespace(__version__="sim", cuda=types.SimpleNamespace(is_available=lambda: False))
tasks.gpu_libraries = lambda: (fake_torch, types.SimpleNamespace(__version__="5.24.0"))
tasks.run_identity = lambda torch: {"gpu": {"name": "Sim H0", "uuid": "GPU-sim", "driver_version": "1"},
                                    "date": "2026-11-27", "code_version": "sim-code",
                                    "protocol_version": str(PROTOCOL_VERSION)}
run.code_version = lambda: "sim-code"
tasks.measure_task = measure_task
preflight.libraries = lambda: None
preflight.gpu = lambda device: None
preflight.torch_sees_gpu = lambda: True
preflight.card_name = lambda device=0: "Sim H0"
cn.calibrate = lambda **kw: PROFILE
cn.one_stream = lambda device=None: contextlib.nullcontext()
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "0")

if __name__ == "__main__":
    sys.exit(run.main(sys.argv[1:]))
