"""The audit writer process: frames on the wire, chunks appended in order, failures surfaced."""

# ruff: noqa: F811 (tests take the imported `engine` fixture as a parameter)

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlops import audit
from mlops.audit_process import pack_frame, unpack_frame
from mlops.errors import InputError
from mlops.scoring import OrderedAuditWriter, ScoringTally, StoreSink, Timings
from tests.unit.test_audit_chain import KEY, batch, engine  # noqa: F401 (engine: the store fixture)

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]


def chunk(n: int, start: int) -> pd.DataFrame:
    """n champion then n shadow records for entities start..start+n-1 (keyed, as scoring sends them)."""
    rows = batch(n, routed=tuple(range(0, n, 7)), start=start)
    rows["entity_key"] = audit.entity_key(rows.pop("entity_id"), KEY)
    rows["input_row"] += start
    return rows


def stored(engine: Engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(
            sa.text("SELECT seq, role, input_row, score, review_reason FROM audit_records ORDER BY seq"), conn
        )


def writer(engine: Engine, batch_id: str = "b1") -> tuple[OrderedAuditWriter, ScoringTally]:
    tally = ScoringTally()
    return OrderedAuditWriter(StoreSink(engine, batch_id), tally, Timings(), background=True), tally


def test_frames_survive_the_wire() -> None:
    frame = pd.DataFrame(
        {
            "hexes": [hashlib.sha256(str(i).encode()).hexdigest() for i in range(5000)],
            "few": (["a", None, "ß-é", "a"] * 1250),
            "many": [f"v{i}" for i in range(5000)],  # many distinct values, uneven widths
            "wide": ["é" * 3] * 4999 + ["ü" * 3],  # fixed width, not ASCII
            "ints": np.arange(5000, dtype=np.int64),
            "floats": np.linspace(0, 1, 5000),
            "flags": np.arange(5000) % 3 == 0,
        }
    )
    frame["text"] = pd.Series([f"t{i % 7}" for i in range(5000)], dtype="str")
    back = unpack_frame(pack_frame(frame))
    assert list(back.columns) == list(frame.columns)
    for name in ("ints", "floats", "flags"):
        assert back[name].dtype == frame[name].dtype and (back[name] == frame[name]).all()
    for name in ("hexes", "few", "many", "wide", "text"):
        assert back[name].dtype == object
        assert back[name].tolist() == frame[name].astype(object).where(frame[name].notna(), None).tolist()
    assert all(type(v) is str for v in back["hexes"])
    assert len(unpack_frame(pack_frame(frame.iloc[:0]))) == 0


def test_writer_process_appends_chunks_in_order_and_the_chain_verifies(engine: Engine) -> None:
    audit_writer, tally = writer(engine)
    with audit_writer:
        assert audit_writer.writer_pid is not None  # a separate process, not a thread
        for start in (0, 50, 100):
            audit_writer.submit(chunk(50, start))
    assert (tally.first_seq, tally.last_seq, tally.records_written) == (1, 300, 300)
    assert tally.review_cases_opened == 3 * len(range(0, 50, 7))  # the routed champion rows
    report = audit.verify_chain(engine)
    assert report.ok and report.records_checked == 300
    records = stored(engine)
    expected = pd.concat([chunk(50, s) for s in (0, 50, 100)], ignore_index=True)
    assert records["input_row"].tolist() == expected["input_row"].tolist()
    assert records["role"].tolist() == expected["role"].tolist()
    assert records["score"].tolist() == expected["score"].tolist()  # float64 exactly
    assert records["review_reason"].fillna("-").tolist() == expected["review_reason"].fillna("-").tolist()


def test_same_chain_content_as_appending_inline(tmp_path: Path, engine: Engine) -> None:
    inline = audit.create_audit_engine(f"sqlite:///{tmp_path / 'inline.db'}")
    audit.create_schema(inline)
    try:
        sink = StoreSink(inline, "b1")
        for start in (0, 40):
            sink(chunk(40, start))
        audit_writer, _ = writer(engine)
        with audit_writer:
            for start in (0, 40):
                audit_writer.submit(chunk(40, start))
        columns = "record_type, batch_id, entity_key, model_name, model_version, model_alias, role, "
        columns += (
            "score, decision, confidence, review_routed, review_reason, input_snapshot, input_row, input_hash"
        )
        with inline.connect() as a, engine.connect() as b:
            query = sa.text(f"SELECT {columns} FROM audit_records ORDER BY seq")
            assert a.execute(query).all() == b.execute(query).all()
    finally:
        inline.dispose()


def test_an_error_in_the_writer_process_is_raised_in_the_caller(engine: Engine) -> None:
    bad = chunk(20, 20).assign(role="bogus")
    audit_writer, tally = writer(engine)
    with pytest.raises(InputError, match="unknown roles"), audit_writer:
        audit_writer.submit(chunk(20, 0))
        audit_writer.submit(bad)
        audit_writer.submit(chunk(20, 40))  # refused: the bad chunk's error comes first
    assert tally.records_written == 40
    report = audit.verify_chain(engine)
    assert report.ok and report.records_checked == 40


def test_a_killed_writer_process_fails_the_batch_without_hanging(engine: Engine) -> None:
    audit_writer, tally = writer(engine)
    with pytest.raises(audit.AuditStoreError, match="audit writer process died"), audit_writer:
        audit_writer.submit(chunk(30, 0))
        audit_writer.wait()
        pid = audit_writer.writer_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        audit_writer.submit(chunk(30, 30))  # the send or the wait notices the death
        audit_writer.wait()
    assert tally.records_written == 60
    report = audit.verify_chain(engine)
    assert report.ok and report.records_checked == 60  # the committed chunk, nothing half-written


def test_a_writer_killed_mid_chunk_leaves_the_chain_as_before(engine: Engine) -> None:
    audit_writer, _ = writer(engine)
    with pytest.raises(audit.AuditStoreError, match="audit writer process died"), audit_writer:
        audit_writer.submit(chunk(10, 0))
        audit_writer.wait()
        audit_writer.submit(chunk(20_000, 10))
        pid = audit_writer.writer_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        audit_writer.wait()
    report = audit.verify_chain(engine)
    assert report.ok and report.records_checked in (20, 40_020)  # all of the chunk or none of it


def test_stores_another_process_cannot_open_are_written_on_a_thread(tmp_path: Path) -> None:
    memory = audit.create_audit_engine("sqlite://")
    mapped = audit.create_audit_engine(f"sqlite:///{tmp_path / 'x.db'}").execution_options(
        schema_translate_map={None: None}
    )
    try:
        for eng in (memory, mapped):
            assert StoreSink(eng, "b").process_url is None
            audit_writer = OrderedAuditWriter(StoreSink(eng, "b"), ScoringTally(), Timings(), background=True)
            with audit_writer:
                assert audit_writer.writer_pid is None
    finally:
        memory.dispose()
        mapped.dispose()
