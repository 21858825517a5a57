"""Appending prediction chunks from a separate writer process (the second core, no shared GIL).

A batch's scoring loop hands each chunk's audit rows to :class:`AuditWriterProcess`; the child
process owns its own engine on the same store and runs :func:`mlops.audit_write.append_predictions`
for each chunk, one transaction per chunk, exactly as the caller would inline. The parent sends
at most one chunk at a time and waits for its answer before the next, so the chain grows in
chunk order.

Frames travel compactly (:func:`pack_frame`): numeric and boolean columns as numpy buffers,
low-cardinality text columns as codes + distinct values, fixed-width ASCII text columns (keys,
hashes) as one joined byte string. Pickling the object columns as they are cost the scoring
thread ~3.5 us per record, which this avoids.

Failures never pass silently: an exception in the child comes back and is raised in the parent
(its traceback attached as a note); a child that dies (killed, out of memory) is noticed while
the parent waits and raised as :class:`~mlops.audit_write.AuditStoreError`. A chunk whose
transaction did not commit leaves the chain as it was before that chunk.
"""

from __future__ import annotations

import multiprocessing
import pickle
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Final

import numpy as np
import pandas as pd

from mlops.audit_write import AuditStoreError

_CODED_MAX_UNIQUES: Final = 4096
_SAMPLE_ROWS: Final = 4096
_POLL_SECONDS: Final = 0.2
_STOP_SECONDS: Final = 30.0

# --- frames on the wire --------------------------------------------------------------------


def _pack_text(values: np.ndarray) -> tuple[str, Any]:
    few = len(pd.unique(values[:_SAMPLE_ROWS])) <= _CODED_MAX_UNIQUES // 4
    if few:  # probably low-cardinality (model, role, decision, ...): codes + distinct values
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        if len(uniques) <= _CODED_MAX_UNIQUES:
            return "coded", (codes.astype(np.int32), list(uniques))
    items: list[Any] = values.tolist()
    if set(map(type, items)) == {str}:
        widths = set(map(len, items))
        width = widths.pop() if len(widths) == 1 else 0
        joined = "".join(items) if width else ""
        if width and joined.isascii():
            return "fixed", (width, joined.encode("ascii"))
    return "list", items


def _unpack_text(kind: str, data: Any) -> np.ndarray:
    if kind == "coded":
        codes, uniques = data
        table = np.array([*uniques, None], dtype=object)
        return table[codes]  # code -1 (missing) takes the None at the end
    if kind == "fixed":
        width, joined = data
        text = joined.decode("ascii")
        out = np.empty(len(text) // width, dtype=object)
        out[:] = [text[i : i + width] for i in range(0, len(text), width)]
        return out
    out = np.empty(len(data), dtype=object)
    out[:] = data
    return out


def pack_frame(frame: pd.DataFrame) -> dict[str, Any]:
    """A frame as plain numpy buffers and short lists (fast to pickle); see :func:`unpack_frame`.

    Numeric and boolean numpy columns go as they are; any other column as text values (pandas
    ``str`` columns come back as object columns of ``str``, missing values as ``None``).
    """
    columns: list[tuple[str, str, Any]] = []
    for name in frame.columns:
        column = frame[name]
        dtype = column.dtype
        if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
            columns.append((str(name), "array", column.to_numpy()))
        else:
            values = column.to_numpy(dtype=object)
            columns.append((str(name), *_pack_text(values)))
    return {"rows": len(frame), "columns": columns}


def unpack_frame(packed: dict[str, Any]) -> pd.DataFrame:
    """The frame :func:`pack_frame` packed (RangeIndex)."""
    data: dict[str, Any] = {}
    for name, kind, payload in packed["columns"]:
        if kind == "array":
            data[name] = payload
        else:
            data[name] = pd.Series(_unpack_text(kind, payload), dtype=object, copy=False)
    return pd.DataFrame(data, index=pd.RangeIndex(packed["rows"]), copy=False)


# --- the child -------------------------------------------------------------------------------


def _error_message(exc: BaseException) -> tuple[str, Any]:
    """The exception itself if it survives pickling, else its text; with the child's traceback."""
    text = "".join(traceback.format_exception(exc))
    try:
        blob = pickle.dumps(exc)
        pickle.loads(blob)
    except Exception:
        return "error", (None, f"{type(exc).__name__}: {exc}", text)
    return "error", (blob, f"{type(exc).__name__}: {exc}", text)


def _writer_main(conn: Connection, url: str, batch_id: str, open_cases: bool) -> None:
    """The child: append each packed chunk it receives; ``None`` ends it."""
    from mlops.audit_schema import create_audit_engine
    from mlops.audit_write import append_predictions

    engine = create_audit_engine(url)
    try:
        while True:
            try:
                message = conn.recv()
            except EOFError:  # the parent is gone
                return
            if message is None:
                conn.send(("stopped", None))
                return
            started = time.perf_counter()
            try:
                done = append_predictions(
                    engine, unpack_frame(message), batch_id=batch_id, open_cases=open_cases
                )
            except BaseException as exc:
                conn.send(_error_message(exc))
                return
            seconds = time.perf_counter() - started
            conn.send(("ok", ((done.first_seq, done.last_seq, done.cases_opened), seconds)))
    finally:
        engine.dispose()


# --- the parent ------------------------------------------------------------------------------


def _raise_child_error(payload: Any) -> None:
    blob, summary, text = payload
    if blob is not None:
        exc = pickle.loads(blob)
        exc.add_note(f"raised in the audit writer process:\n{text}")
        raise exc
    raise AuditStoreError(f"the audit writer process failed: {summary}", hint=text.strip().splitlines()[-1])


@dataclass
class PendingWrite:
    """A chunk handed to the writer process; :meth:`result` waits for its answer."""

    writer: AuditWriterProcess

    def result(self) -> tuple[tuple[int, int, int], float]:
        kind, payload = self.writer.receive()
        if kind == "error":
            _raise_child_error(payload)
        if kind != "ok":
            raise AuditStoreError(f"the audit writer process answered {kind!r} to a chunk")
        done, seconds = payload
        return (int(done[0]), int(done[1]), int(done[2])), float(seconds)

    def exception(self) -> BaseException | None:
        try:
            self.result()
        except BaseException as exc:
            return exc
        return None


class AuditWriterProcess:
    """One child process appending prediction chunks of ``batch_id`` to the store at ``url``.

    ``url`` must name a store another process can open (a SQLite file or a server), with its
    password. The child starts at once (``spawn``: no inherited threads or locks), so its
    imports overlap the scoring of the first chunk.
    """

    def __init__(self, url: str, batch_id: str, *, open_cases: bool = True) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe(duplex=True)
        self._process = context.Process(
            target=_writer_main,
            args=(child, url, batch_id, open_cases),
            name="mlops-audit-writer",
            daemon=True,
        )
        self._process.start()
        child.close()
        self._busy = False

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def _died(self) -> AuditStoreError:
        self._process.join(timeout=1.0)
        return AuditStoreError(
            f"the audit writer process died (exit code {self._process.exitcode}); the chunk it was "
            "appending was not committed and nothing after it was written",
            hint="check memory and the audit store, then score the batch again",
        )

    def submit(self, records: pd.DataFrame) -> PendingWrite:
        """Send one chunk (the previous one must have been answered)."""
        if self._busy:
            raise RuntimeError("a chunk is already in flight")
        packed = pack_frame(records)
        try:
            self._conn.send(packed)
        except (BrokenPipeError, ConnectionResetError, EOFError) as exc:
            raise self._died() from exc
        self._busy = True
        return PendingWrite(self)

    def receive(self) -> tuple[str, Any]:
        """The child's next answer; raises if it died before giving one."""
        while True:
            try:
                if self._conn.poll(_POLL_SECONDS):
                    message: tuple[str, Any] = self._conn.recv()
                    self._busy = False
                    return message
            except (EOFError, ConnectionResetError, BrokenPipeError) as exc:
                self._busy = False
                raise self._died() from exc
            if not self._process.is_alive() and not self._conn.poll(0):
                self._busy = False
                raise self._died()

    def close(self) -> None:
        """Stop the child (after its chunk in flight, if any) and reap it."""
        try:
            if self._process.is_alive():
                if self._busy:
                    self.receive()
                self._conn.send(None)
                self.receive()
        except (AuditStoreError, OSError, EOFError):
            pass
        finally:
            self._process.join(timeout=_STOP_SECONDS)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
            self._conn.close()
