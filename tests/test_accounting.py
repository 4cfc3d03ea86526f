"""How parts relate to the whole: the regime flag (issue 13, item 4)."""

import types

from clear_native.accounting import regime_mismatch


def part(name, reasons=(), clocks=(1980.0, 1980.0)):
    return types.SimpleNamespace(name=name, clock_event_reasons=list(reasons), sm_clock_mhz=clocks)


def test_parts_measured_in_another_clock_regime_are_named():
    # Llama-3.2-1B at 8x128 on an H200: the model at its power limit, SM 1935-1950 MHz; its MLP alone also
    # capped but at 1410-1650 MHz; its norms alone far from any limit.
    whole = {"clock_event_reasons": ["sw_power_cap"], "sm_clock_mhz": [1935.0, 1950.0]}
    parts = [part("mlp", ["sw_power_cap"], (1410.0, 1650.0)), part("norm", [], (1980.0, 1980.0)),
             part("attention", ["sw_power_cap"], (1920.0, 1965.0)), part("idle_only", ["gpu_idle"], (1940.0, 1950.0))]
    flagged = dict(regime_mismatch(parts, whole))
    assert set(flagged) == {"mlp", "norm", "idle_only"}
    assert "1410-1650 MHz alone" in flagged["mlp"]
    assert "limited by nothing alone, by sw_power_cap in the model" == flagged["norm"]


def test_nothing_is_flagged_where_the_model_and_its_parts_run_alike():
    whole = {"clock_event_reasons": [], "sm_clock_mhz": [1980.0, 1980.0]}
    assert regime_mismatch([part("a"), part("b", ["gpu_idle"], (1975.0, 1980.0))], whole) == []
