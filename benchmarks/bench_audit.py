"""Audit store throughput: append and verify N prediction records on SQLite and PostgreSQL.

    .venv/bin/python benchmarks/bench_audit.py [--records 200000] [--repeat 3]
        [--pg-url postgresql+psycopg2://postgres@127.0.0.1:5432/test]

Half the records are champion rows, half shadow rows (as the scoring flow writes them), with
precomputed entity keys and input hashes. Each repeat appends into a fresh store (a new
SQLite file in WAL mode; a new PostgreSQL schema, dropped afterwards). Prints and writes
``benchmarks/results/audit.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlops import audit
from mlops.audit_lookup import find_entity

RESULTS = Path(__file__).resolve().parent / "results" / "audit.json"


def make_batch(records: int, seed: int = 0) -> pd.DataFrame:
    """``records`` prediction rows: records/2 entities scored by champion and shadow."""
    n = records // 2
    rng = np.random.default_rng(seed)
    keys = audit.entity_key(pd.Series([f"APP-{i:09d}" for i in range(n)]), "bench-key")
    input_hashes = [hashlib.sha256(i.to_bytes(8, "little")).hexdigest() for i in range(n)]
    scores = rng.random(n)
    half = pd.DataFrame(
        {
            "entity_key": keys,
            "input_snapshot": hashlib.sha256(b"snapshot").hexdigest(),
            "input_row": np.arange(n, dtype=np.int64),
            "input_hash": input_hashes,
            "confidence": np.abs(scores - 0.5) * 2,
            "review_routed": np.abs(scores - 0.5) < 0.02,
            "review_reason": np.where(np.abs(scores - 0.5) < 0.02, "low confidence", None),
        }
    )
    champion = half.assign(
        model_name="credit-risk",
        model_version="7",
        model_alias="champion",
        role="champion",
        score=scores,
        decision=np.where(scores > 0.5, "decline", "approve"),
    )
    shadow_scores = np.clip(scores + rng.normal(0, 0.05, n), 0, 1)
    shadow = half.assign(
        model_name="credit-risk",
        model_version="8",
        model_alias="challenger",
        role="shadow",
        score=shadow_scores,
        decision=np.where(shadow_scores > 0.5, "decline", "approve"),
    )
    return pd.concat([champion, shadow], ignore_index=True)


@contextmanager
def sqlite_store() -> Iterator[Engine]:
    with tempfile.TemporaryDirectory() as tmp:
        engine = audit.create_audit_engine(f"sqlite:///{tmp}/audit.db")
        audit.create_schema(engine)
        try:
            yield engine
        finally:
            engine.dispose()


@contextmanager
def postgres_store(url: str) -> Iterator[Engine]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    engine = audit.create_audit_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    try:
        audit.create_schema(engine)
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def measure(store: Callable[[], Any], batch: pd.DataFrame, repeat: int) -> dict[str, float | int | str]:
    appends: list[float] = []
    verify_s = find_s = 0.0
    for i in range(repeat):
        with store() as engine:
            start = time.perf_counter()
            result = audit.append_predictions(engine, batch, batch_id=f"bench-{i}")
            appends.append(time.perf_counter() - start)
            if i == 0:
                start = time.perf_counter()
                report = audit.verify_chain(engine)
                verify_s = time.perf_counter() - start
                assert report.ok and report.records_checked == len(batch), report
                assert result.count == len(batch)
                start = time.perf_counter()
                found = find_entity(engine, f"APP-{len(batch) // 4:09d}", "bench-key")
                find_s = time.perf_counter() - start
                assert len(found.records) == 2, found  # champion + shadow
    append_s = statistics.median(appends)
    return {
        "records": len(batch),
        "append_s_median": round(append_s, 3),
        "append_s_all": ",".join(f"{a:.3f}" for a in appends),
        "append_records_per_s": round(len(batch) / append_s),
        "verify_s": round(verify_s, 3),
        "verify_records_per_s": round(len(batch) / verify_s),
        "find_one_application_s": round(find_s, 3),  # `mlops audit find`: reads the whole table
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pg-url", default="postgresql+psycopg2://postgres@127.0.0.1:5432/test")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    start = time.perf_counter()
    batch = make_batch(args.records)
    keys_s = time.perf_counter() - start
    results: dict[str, Any] = {
        "benchmark": "audit append + verify",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        "sqlalchemy": sa.__version__,
        "records": len(batch),
        "batch_build_s_incl_entity_keys": round(keys_s, 3),
        "sqlite": measure(sqlite_store, batch, args.repeat),
    }
    try:
        with sa.create_engine(args.pg_url).connect() as conn:
            results["postgresql_version"] = conn.exec_driver_sql("SHOW server_version").scalar()
        results["postgresql"] = measure(lambda: postgres_store(args.pg_url), batch, args.repeat)
    except sa.exc.OperationalError as exc:
        results["postgresql"] = {"skipped": f"server unreachable: {exc.orig}"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
