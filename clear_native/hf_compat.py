"""Everything that knows transformers' internals: decode inputs on a static KV cache, and the
data-dependent decisions a captured forward must take as its eager forward does.

Nothing here imports transformers at module load: ``import clear_native`` works without it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
import types


def accepts(fn, name: str) -> bool:
    """Whether ``fn`` takes a parameter called ``name`` (False where its signature cannot be read)."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def no_init_weights():
    """transformers' context in which a model is built without initialising its weights (fake tensors,
    or weights about to be overwritten)."""
    from transformers.initialization import no_init_weights as skip

    return skip()


# --------------------------------------------------------------------------- decode on a static cache


def _fixed_slot_update(layer, key_states, value_states, *args, **kwargs):
    """A StaticLayer.update that writes at a fixed position instead of advancing its counter.

    Note [Decode replays write one slot]: transformers' StaticCache advances a
    device-side counter on every step, so replaying a captured step would write
    the next slot each time (and run out of bounds). For repetitions every
    replay must do the same work: the same index arithmetic (arange + base) and
    the same copies, from a base that never moves.
    """
    import torch

    cache_position = torch.arange(key_states.shape[-2], device=layer.keys.device) + layer._cn_base
    layer.keys.index_copy_(2, cache_position, key_states)
    layer.values.index_copy_(2, cache_position, value_states)
    return layer.keys, layer.values


def cache_argument(model) -> str:
    """The name the model's forward takes its KV cache under: ``cache`` (transformers >= 5.24)
    or ``past_key_values`` (earlier; deprecated in 5.24, removed in 5.40)."""
    return "cache" if accepts(model.forward, "cache") else "past_key_values"


def _positions(model, positions) -> dict:
    """``cache_position`` where the forward still takes it (transformers < 5.24 reads positions from it;
    later ones from the cache's own length)."""
    return {"cache_position": positions} if accepts(model.forward, "cache_position") else {}


def decode_inputs(model, input_ids, cache_len: int, kw: dict):
    """Inputs of one decode step after `cache_len` tokens, with a static (fixed-size) KV cache.

    The cache is filled with a prefill of random tokens; then every layer writes
    the new token at slot `cache_len` on every call (Note [Decode replays write one slot]).
    An encoder-decoder model encodes ``input_ids`` once: the step is the
    decoder's, with the encoder's output and its cross-attention cache fixed.
    Returns (positional inputs, keyword inputs) of the step.
    """
    import torch
    from transformers import EncoderDecoderCache, StaticCache

    config, dev = model.config, input_ids.device
    b = input_ids.shape[0]
    name = cache_argument(model)
    self_cache = StaticCache(config=config, max_cache_len=cache_len + 1)
    prompt = torch.randint(0, config.vocab_size, (b, cache_len), device=dev)
    fill = _positions(model, torch.arange(cache_len, device=dev))
    with torch.no_grad():
        if config.is_encoder_decoder:
            encoded = model.get_encoder()(input_ids)
            cache = EncoderDecoderCache(self_cache, StaticCache(config=config, max_cache_len=input_ids.shape[1]))
            model(encoder_outputs=encoded, decoder_input_ids=prompt, use_cache=True, **{name: cache}, **fill)
        else:
            cache = self_cache
            try:
                model(prompt, use_cache=True, **{name: cache}, **fill)
            except RuntimeError as first:
                # A model that sizes a bias from the 2-D attention mask and its keys from the cache (BLOOM's
                # ALiBi on transformers 5.17: 16 vs 17) needs the mask over the whole cache, its empty slot
                # masked, as generate() would give it; others (OPT's positions from the mask) need none.
                if isinstance(first, torch.OutOfMemoryError) or not accepts(model.forward, "attention_mask"):
                    raise
                self_cache = cache = StaticCache(config=config, max_cache_len=cache_len + 1)
                mask = torch.ones(b, cache_len + 1, dtype=torch.long, device=dev)
                mask[:, -1] = 0
                try:
                    model(prompt, use_cache=True, attention_mask=mask, **{name: cache}, **fill)
                except RuntimeError:
                    raise first from None  # the mask was not the problem: say what failed first
    for layer in self_cache.layers:
        if not hasattr(layer, "cumulative_length"):
            raise ValueError(f"decode mode needs transformers' StaticCache layers; got {type(layer).__name__}")
        layer._cn_base = torch.full((), cache_len, dtype=torch.long, device=layer.keys.device)
        layer.update = types.MethodType(_fixed_slot_update, layer)
    step_kw = dict(kw, use_cache=True, **{name: cache}, **_positions(model, torch.tensor([cache_len], device=dev)))
    if config.is_encoder_decoder:
        step_kw.update(encoder_outputs=encoded, decoder_input_ids=prompt[:, -1:])
        if accepts(model.forward, "decoder_attention_mask"):
            # As generate() does. Without it BART builds torch.ones(b, cache length + 1) from the
            # static cache's length, a GPU tensor: a host sync that forbids capturing the step.
            step_kw["decoder_attention_mask"] = torch.ones(b, cache_len + 1, dtype=torch.long, device=dev)
        return (), step_kw
    return (input_ids[:, -1:],), step_kw


def supports_decode(model) -> bool:
    """A transformers model with a KV cache: what decode mode needs."""
    return hasattr(model, "config") and (accepts(model.forward, "past_key_values") or accepts(model.forward, "cache"))


# --------------------------------------------------------------------------- eager decisions

# Note [Capture what eager runs]: transformers 5 decides from the data whether an
# attention mask can be dropped (no padding: SDPA runs `is_causal` or unmasked,
# which dispatches to flash attention) and whether position ids are packed, with
# `.all()` checks that synchronise with the CPU. While a stream is being captured
# it skips those checks and keeps the mask, so a captured BERT-base ran the math
# SDPA path in fp32 (413 kernels, 1.88 ms per forward at 8x128 on an H200)
# instead of the flash kernel its eager forward runs (166 kernels, 0.80 ms), and
# the components, recorded eagerly, did not add up to it. So one eager call
# records each decision, and the capture (and the synchronisation pre-check)
# replays them in the same order: the graph holds the eager forward's kernels,
# and the pre-check no longer mistakes these checks for a CPU synchronisation.

# (module, function or Class.method): functions whose result depends on tensor data. A model's padding check
# (PreTrainedModel.warn_if_padding_and_no_attention_mask, called where no attention mask is given) indexes the
# ids with a Python list, an upload that was not replayed and synchronised (DeBERTa-v3 on an H200); its host read
# is the check's own (Note [Reads inside a decision], graph_capture.py). Replayed whole, it only warned.
DECISIONS = (
    ("transformers.masking_utils", "_ignore_causal_mask_sdpa"),
    ("transformers.masking_utils", "_ignore_bidirectional_mask_sdpa"),
    ("transformers.masking_utils", "find_packed_sequence_indices"),
    ("transformers.modeling_utils", "PreTrainedModel.warn_if_padding_and_no_attention_mask"),
)


class EagerDecisions:
    """Records the DECISIONS of one eager call; replays them, in order, in later calls."""

    def __init__(self) -> None:
        self.recorded: list = []      # (function name, result) in call order
        self.mismatches = 0           # replayed calls that did not match the record (the original ran)
        self.depth = 0                # > 0 while a DECISION runs (its own host reads are not the forward's)

    def _targets(self):
        """(owner, attribute name) of each DECISION present: a module, or a class of it for a method."""
        for mod_name, path in DECISIONS:
            owner = sys.modules.get(mod_name)  # never imported here: only what the model uses
            *classes, fn_name = path.split(".")
            for cls in classes:
                owner = getattr(owner, cls, None)
            if owner is not None and callable(vars(owner).get(fn_name)):  # where it is defined: patched there
                yield owner, fn_name

    @contextlib.contextmanager
    def _patched(self, wrap):
        saved = [(owner, name, vars(owner)[name]) for owner, name in self._targets()]
        try:
            for mod, name, fn in saved:
                setattr(mod, name, wrap(name, fn))
            yield self
        finally:
            for mod, name, fn in saved:
                setattr(mod, name, fn)

    def _inside(self, fn, args, kwargs):
        self.depth += 1
        try:
            return fn(*args, **kwargs)
        finally:
            self.depth -= 1

    def recording(self):
        """Calls inside run the original functions and record their results."""
        self.recorded.clear()

        def wrap(name, fn):
            @functools.wraps(fn)
            def recorder(*args, **kwargs):
                out = self._inside(fn, args, kwargs)
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
                    return self._inside(fn, args, kwargs)
                return rec[1]
            return replayer

        return self._patched(wrap)

    def marking(self):
        """Calls inside run the original functions, each in a profiler range ``cn-eager::NAME``: what a decision
        launches is not in a captured graph, which replays its result (Note [What the graph does not run],
        work.py)."""
        from torch.profiler import record_function

        def wrap(name, fn):
            @functools.wraps(fn)
            def marked(*args, **kwargs):
                with record_function(f"cn-eager::{name}"):
                    return fn(*args, **kwargs)
            return marked

        return self._patched(wrap)
