"""How parts relate to the whole: the regime flag (issue 13, item 4)."""

import types

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
