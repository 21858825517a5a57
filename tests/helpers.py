"""Small, contract-driven test data (independent of the simulator)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlops.contracts import Contract


def clean_frame(contract: Contract, n: int = 200, seed: int = 0) -> pd.DataFrame:
    """Rows that satisfy every rule of ``contract`` (ranges, categories, uniqueness, nullability)."""
    rng = np.random.default_rng(seed)
    cols: dict[str, object] = {}
    for col in contract.columns:
        if col.dtype == "string":
            cols[col.name] = [f"{col.name[:3].upper()}-{seed}-{i:06d}" for i in range(n)]
        elif col.dtype == "datetime":
            base = pd.Timestamp("2026-01-01", tz="UTC")
            cols[col.name] = base + pd.to_timedelta(np.sort(rng.integers(0, 86_400, n)), unit="s")
        elif col.dtype == "category":
            assert col.categories is not None
            cols[col.name] = rng.choice(list(col.categories), n)
        else:
            lo = col.min if col.min is not None else 0.0
            hi = col.max if col.max is not None else lo + 100.0
            values = rng.uniform(lo, hi, n)
            cols[col.name] = np.floor(values).astype("int64") if col.dtype == "int" else values
    return pd.DataFrame(cols)
