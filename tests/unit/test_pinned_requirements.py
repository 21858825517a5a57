"""MLflow's requirement check under :func:`pinned_requirement_checks`: the same verdicts, and
MLflow's own map of installed packages left as it was found (unbuilt, or built and untouched)."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
from mlflow.utils import requirements_utils as ru

from mlops.pyfunc_model import PINNED_PACKAGES, pinned_requirement_checks, pip_requirements


@pytest.fixture
def unbuilt_map(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's map as in a fresh process (another test may have built it)."""
    monkeypatch.setattr(ru, "_MODULES_TO_PACKAGES", None)
    monkeypatch.setattr(ru, "_PACKAGES_TO_MODULES", None)


@pytest.mark.usefixtures("unbuilt_map")
def test_the_check_gives_the_same_verdicts_and_the_map_stays_unbuilt() -> None:
    with pinned_requirement_checks():
        assert ru._check_requirement_satisfied(f"numpy=={np.__version__}") is None
        for requirement in pip_requirements():
            assert ru._check_requirement_satisfied(requirement) is None, requirement
        mismatch = ru._check_requirement_satisfied("numpy==0.0.1")
        assert mismatch is not None and mismatch.installed_version == np.__version__
        missing = ru._check_requirement_satisfied("no-such-package-here==1.0")
        assert missing is not None and missing.installed_version is None
        assert set(ru._MODULES_TO_PACKAGES or {}) >= set(PINNED_PACKAGES)
        assert len(ru._MODULES_TO_PACKAGES or {}) < 10  # not every installed distribution
    assert ru._MODULES_TO_PACKAGES is None and ru._PACKAGES_TO_MODULES is None


@pytest.mark.usefixtures("unbuilt_map")
def test_a_mismatch_still_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mlflow"), pinned_requirement_checks():
        ru.warn_dependency_requirement_mismatches(["numpy==0.0.1", *pip_requirements()])
    text = caplog.text
    assert "numpy==0.0.1" in text and "mismatches" in text
    assert "xgboost" not in text  # the pinned, installed versions pass


def test_a_built_map_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    built = {"numpy": ["numpy"], "yaml": ["PyYAML"]}
    monkeypatch.setattr(ru, "_MODULES_TO_PACKAGES", built)
    with pinned_requirement_checks():
        assert ru._MODULES_TO_PACKAGES is built
    assert ru._MODULES_TO_PACKAGES is built and built == {"numpy": ["numpy"], "yaml": ["PyYAML"]}


@pytest.mark.usefixtures("unbuilt_map")
def test_overlapping_users_keep_the_map_until_the_last_leaves() -> None:
    inside, release = threading.Event(), threading.Event()
    seen: list[object] = []

    def other() -> None:
        with pinned_requirement_checks():
            inside.set()
            release.wait(10)
            seen.append(ru._MODULES_TO_PACKAGES)

    thread = threading.Thread(target=other)
    thread.start()
    assert inside.wait(10)
    with pinned_requirement_checks():
        pass  # this user leaves first: the other still needs the map
    assert ru._MODULES_TO_PACKAGES is not None
    release.set()
    thread.join(10)
    assert seen and seen[0] is not None
    assert ru._MODULES_TO_PACKAGES is None
