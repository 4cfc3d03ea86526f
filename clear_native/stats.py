"""Summary statistics of repeated trials: mean, CV and a 95 % confidence interval."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Two-sided 95 % quantiles of Student's t, by degrees of freedom 1..30; 1.96 beyond.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
         2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
         2.052, 2.048, 2.045, 2.042)


def t975(dof: int) -> float:
    if dof < 1:
        return math.inf
    return _T975[dof - 1] if dof <= len(_T975) else 1.96


@dataclass(frozen=True)
class Summary:
    """Mean of n trials with its spread. `ci95_half` is in the values' unit."""

    n: int
    mean: float
    std: float
    cv: float          # std / mean
    ci95_half: float   # half-width of the 95 % confidence interval of the mean
    ci95_rel: float    # ci95_half / mean

    @classmethod
    def of(cls, values) -> "Summary":
        v = np.asarray(values, dtype=np.float64)
        n = int(v.size)
        if n == 0:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        mean = float(v.mean())
        std = float(v.std(ddof=1)) if n > 1 else math.nan
        half = t975(n - 1) * std / math.sqrt(n) if n > 1 else math.inf
        cv = std / abs(mean) if mean else math.nan
        return cls(n, mean, std, cv, half, half / abs(mean) if mean else math.nan)
