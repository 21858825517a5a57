"""Small, contract-driven test data (independent of the simulator)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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


def wait_for_events(
    event: str,
    resource_id: str,
    *,
    since: object,
    count: int = 1,
    timeout: float = 30.0,
    match: Callable[[Any], bool] | None = None,
) -> list[Any]:
    """Events of one name about one resource (and passing ``match``), read back from the server.

    Events travel asynchronously (websocket -> server -> database), so poll with a deadline.
    Other tests share the harness: use ``match`` (e.g. on the payload) to pick this test's events.
    """
    import time

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter

    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            page = client.read_events(
                filter=EventFilter(
                    occurred=EventOccurredFilter(since=since),  # type: ignore[arg-type]
                    event=EventNameFilter(name=[event]),
                    resource=EventResourceFilter(id=[resource_id]),
                ),
                limit=50,
            )
        events = [e for e in page.events if match is None or match(e)]
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.25)


def latest_artifact(key: str, flow_run_id: str | None = None) -> Any:
    """The data of the newest Prefect artifact ``key`` (of one flow run, when given).

    Tests share one harness and artifact keys repeat across them: pass the flow run id
    wherever the test knows it.
    """
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    flt = ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
    if flow_run_id is not None:
        flt.flow_run_id = ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)])
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=flt, sort=ArtifactSort.CREATED_DESC)
    assert found, f"no Prefect artifact {key!r}" + (f" for flow run {flow_run_id}" if flow_run_id else "")
    return found[0].data


# Credentials and checksum settings for moto's S3 server (any non-empty keys are accepted).
S3_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
    "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
}

POSTGRES_CANDIDATE_URLS = (
    "postgresql+psycopg2://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg2://root@127.0.0.1:5432/test",
)


def postgres_url() -> str:
    """The first PostgreSQL that answers: ``MLOPS_TEST_PG_URL`` if set, else the local server as
    user ``postgres`` then ``root``. Skips the calling test (naming every attempt) if none does."""
    import os

    import pytest
    import sqlalchemy as sa

    urls = [os.environ["MLOPS_TEST_PG_URL"]] if os.environ.get("MLOPS_TEST_PG_URL") else []
    problems = []
    for url in [*urls, *POSTGRES_CANDIDATE_URLS]:
        eng = sa.create_engine(url, connect_args={"connect_timeout": 3})
        try:
            with eng.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return url
        except sa.exc.OperationalError as exc:
            problems.append(f"{url}: {str(exc.orig).strip()}")
        finally:
            eng.dispose()
    pytest.skip("PostgreSQL unreachable: " + " | ".join(problems))


def batch_record_context() -> Any:
    """A scoring context for writing batch records (model "m" v1, a simple policy); the model
    is never called."""
    from mlops.model_spec import DecisionPolicy
    from mlops.scoring import LoadedModel, ScoringContext, ScoringModels

    model = LoadedModel(name="m", version=1, alias="champion", predict=lambda f: f)
    return ScoringContext(
        models=ScoringModels(champion=model),
        policy=DecisionPolicy(threshold=0.5, review_band=(0.4, 0.6)),
        id_column="id",
        hash_key="k",
    )


def restore_guards(engine: Any) -> Any:
    """Open the audit store as every command does (``ensure_schema``), then check the guards
    are back, their restore was recorded once in the chain, and a DELETE is refused again.
    Returns the verification report."""
    import pytest

    from mlops import audit

    before = audit.verify_chain(engine)
    audit.ensure_schema(engine)
    report = audit.verify_chain(engine)
    assert report.guards_missing == [] and report.guards_restored == before.guards_restored + 1
    assert report.last_seq == before.last_seq + 1  # the guards_restored record, chained
    with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM audit_records WHERE seq = 1")
    return report
