"""Fixtures shared by unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from mlops import audit


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A fresh SQLite audit store (real file, WAL, schema and triggers) for one test."""
    eng = audit.create_audit_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    audit.create_schema(eng)
    yield eng
    eng.dispose()
