"""How parts relate to the whole: the regime flag (issue 13, item 4)."""

import math
import types

import pytest

from clear_native.accounting import regime, regime_mismatch


def part(name, reasons=(), clocks=(1980.0, 1980.0), watts=300.0):
    return types.SimpleNamespace(name=name, clock_event_reasons=list(reasons), sm_clock_mhz=clocks, mean_power_w=watts)


def test_parts_measured_in_another_clock_regime_are_named():
    # Llama-3.2-1B at 8x128 on an H200 (700 W limit): the model at its power limit, 689 W, SM 1935-1950 MHz;
    # its MLP alone capped too (676 W) but at 1410-1650 MHz; its norms alone far from the limit.
    whole = {"clock_event_reasons": ["sw_power_cap"], "sm_clock_mhz": [1935.0, 1950.0], "mean_power_w": 689.0}
    parts = [part("mlp", ["sw_power_cap"], (1410.0, 1650.0), 676.0), part("norm", [], (1980.0, 1980.0), 308.0),
             part("attention", ["sw_power_cap"], (1920.0, 1965.0), 640.0),
             part("capped_bit_only", ["sw_power_cap"], (1940.0, 1950.0), 250.0)]
    flagged = dict(regime_mismatch(parts, whole, power_limit_w=700.0))
    assert set(flagged) == {"mlp", "norm", "capped_bit_only"}
    assert "1410-1650 MHz alone" in flagged["mlp"]
    assert flagged["norm"] == "free alone (308 W), power limit in the model (689 W)"


def test_the_power_cap_bit_alone_is_not_the_limit():
    # Seen on an H200: sw_power_cap reported for windows at 250-310 W of a 700 W limit.
    assert regime(["sw_power_cap"], 250.0, 700.0) == "free"
    assert regime(["sw_power_cap"], 650.0, 700.0) == "power limit"
    assert regime(["hw_thermal_slowdown"], 250.0, 700.0) == "throttled"
    whole = {"clock_event_reasons": ["sw_power_cap"], "sm_clock_mhz": [1980.0, 1980.0], "mean_power_w": 250.0}
    assert regime_mismatch([part("a"), part("b", ["gpu_idle"], (1975.0, 1980.0))], whole, 700.0) == []


def test_a_blocks_energy_is_shared_by_its_parts_with_a_ci_that_carries_every_term():
    from clear_native.blocks import attribute

    # A block of 10 J; parts weighing 3 J and 1 J (each ± 0.1 J); the block ± 0.2 J.
    shares, cis = attribute(10.0, 0.2, {"a": (3.0, 0.1), "b": (1.0, 0.1)})
    assert shares == pytest.approx({"a": 7.5, "b": 2.5}) and sum(shares.values()) == pytest.approx(10.0)
    # f_a = B w_a / W: d/dB = 3/4, d/dw_a = 10 * 1 / 16, d/dw_b = -10 * 3 / 16.
    assert cis["a"] == pytest.approx(math.sqrt((0.75 * 0.2) ** 2 + (10 / 16 * 0.1) ** 2 + (30 / 16 * 0.1) ** 2))
    # A part that is all of the block carries only the block's own CI.
    shares, cis = attribute(10.0, 0.2, {"a": (3.0, 0.1)})
    assert shares == {"a": 10.0} and cis["a"] == pytest.approx(0.2)


def test_shares_follow_the_in_context_marginals_only_where_every_part_has_one():
    from types import SimpleNamespace as NS

    from clear_native.blocks import attribution_weights

    alone = {"attn": NS(energy_per_call_j=2.0, ci95_rel=0.01), "mlp": NS(energy_per_call_j=1.0, ci95_rel=0.02)}
    counts = {"attn": 1.0, "mlp": 2.0}
    ctx = {"attn": NS(energy_per_call_j=2.5, energy_per_call_ci95_j=0.05),
           "mlp": NS(energy_per_call_j=1.5, energy_per_call_ci95_j=0.03)}
    basis, w = attribution_weights(counts, alone, ctx)
    assert basis == "in context" and set(w) == {"attn", "mlp"}
    assert w["attn"] == pytest.approx((2.5, 0.05)) and w["mlp"] == pytest.approx((3.0, 0.06))
    basis, w = attribution_weights(counts, alone, {"attn": ctx["attn"]})  # one part without: all alone
    assert basis == "alone" and w["attn"] == pytest.approx((2.0, 0.02)) and w["mlp"] == pytest.approx((2.0, 0.04))
    ctx["mlp"] = NS(energy_per_call_j=-0.1, energy_per_call_ci95_j=0.2)  # a marginal lost in noise
    assert attribution_weights(counts, alone, ctx)[0] == "alone"


def test_a_model_flagged_at_the_cap_whose_clocks_never_dropped_runs_free():
    # Gemma-2B-2L prefill on an H200: the whole model 604 W of 700 with sw_power_cap set, SM 1980 MHz in every
    # window, the highest any part read; its MLP alone at 747 W, 1905-1920 MHz; its LM head alone at 855-1500 MHz.
    from clear_native.paced import candidates

    whole = {"clock_event_reasons": ["sw_power_cap"], "sm_clock_mhz": [1980.0, 1980.0], "mean_power_w": 604.0}
    parts = [part("mlp", ["sw_power_cap"], (1905.0, 1920.0), 747.0),
             part("lm_head", ["sw_power_cap"], (855.0, 1500.0), 692.0), part("norm", [], (1980.0, 1980.0), 160.0)]
    top = 1980.0
    assert regime(whole["clock_event_reasons"], 604.0, 700.0) == "power limit"  # the bit and the power alone
    assert regime(whole["clock_event_reasons"], 604.0, 700.0, whole["sm_clock_mhz"], top) == "free"
    assert regime(["sw_power_cap"], 747.0, 700.0, (1905.0, 1920.0), top) == "power limit"
    assert candidates(parts, whole, 700.0, "auto") == ["mlp", "lm_head"]
    assert dict(regime_mismatch(parts, whole, 700.0)) == {
        "mlp": "power limit alone (747 W), free in the model (604 W)",
        "lm_head": "power limit alone (692 W), free in the model (604 W)"}
    # The same model with its clocks lowered in some window: at the limit, and nothing is paced.
    slowed = dict(whole, sm_clock_mhz=[1890.0, 1980.0])
    assert candidates(parts, slowed, 700.0, "auto") == []
