"""Make a captured forward pass take the branches its eager forward takes.

Note [Capture what eager runs]: transformers 5 decides from the data whether an
attention mask can be dropped (no padding: SDPA runs `is_causal` or unmasked,
which dispatches to flash attention) and whether position ids are packed, with
`.all()` checks that synchronise with the CPU. While a stream is being captured
it skips those checks and keeps the mask, so a captured BERT-base ran the math
SDPA path in fp32 (413 kernels, 1.88 ms per forward at 8x128 on an H200)
instead of the flash kernel its eager forward runs (166 kernels, 0.80 ms), and
the components, recorded eagerly, did not add up to it. So one eager call
records each decision, and the capture (and the synchronisation pre-check)
replays them in the same order: the graph holds the eager forward's kernels,
and the pre-check no longer mistakes these checks for a CPU synchronisation.
"""

from __future__ import annotations

import contextlib
import functools
import sys

# (module, function): module-level functions whose result depends on tensor data.
DECISIONS = (
    ("transformers.masking_utils", "_ignore_causal_mask_sdpa"),
    ("transformers.masking_utils", "_ignore_bidirectional_mask_sdpa"),
    ("transformers.masking_utils", "find_packed_sequence_indices"),
)


class EagerDecisions:
    """Records the DECISIONS of one eager call; replays them, in order, in later calls."""

    def __init__(self) -> None:
        self.recorded: list = []      # (function name, result) in call order
        self.mismatches = 0           # replayed calls that did not match the record (the original ran)

    def _targets(self):
        for mod_name, fn_name in DECISIONS:
            mod = sys.modules.get(mod_name)  # never imported here: only what the model uses
            if mod is not None and callable(getattr(mod, fn_name, None)):
                yield mod, fn_name

    @contextlib.contextmanager
    def _patched(self, wrap):
        saved = [(mod, name, getattr(mod, name)) for mod, name in self._targets()]
        try:
            for mod, name, fn in saved:
                setattr(mod, name, wrap(name, fn))
            yield self
        finally:
            for mod, name, fn in saved:
                setattr(mod, name, fn)

    def recording(self):
        """Calls inside run the original functions and record their results."""
        self.recorded.clear()

        def wrap(name, fn):
            @functools.wraps(fn)
            def recorder(*args, **kwargs):
                out = fn(*args, **kwargs)
                self.recorded.append((name, out))
                return out
            return recorder

        return self._patched(wrap)

    def replaying(self):
        """Calls inside get the recorded results in order (one forward pass per `with`)."""
        cursor = iter(list(self.recorded))

        def wrap(name, fn):
            @functools.wraps(fn)
            def replayer(*args, **kwargs):
                rec = next(cursor, None)
                if rec is None or rec[0] != name:
                    self.mismatches += 1
                    return fn(*args, **kwargs)
                return rec[1]
            return replayer

        return self._patched(wrap)
