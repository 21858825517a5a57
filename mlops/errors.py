"""One root exception for the product, with narrow subclasses that say what to do."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError


class MlopsError(Exception):
    """Root of every error this product raises on purpose.

    ``exit_code`` follows the CLI contract: 1 = the work was refused, 2 = bad usage or input.
    """

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message}\n  -> {hint}" if hint else message)


class InputError(MlopsError):
    """Input cannot be read or has the wrong shape (missing file, missing column, empty batch)."""


class MissingColumns(InputError):
    """A batch lacks columns its contract requires: most often another dataset's file (an
    applications batch given to ``mlops outcomes``); the command that reads it says which."""


class ContractError(MlopsError):
    """A data contract file is itself invalid or out of date."""


class SettingsError(MlopsError):
    """The settings (environment variables) are inconsistent."""


class StorageIntegrityError(MlopsError):
    """A content-addressed object exists with other content than its key promises."""

    exit_code = 1


class ServiceUnavailable(MlopsError):
    """A service the work needs (registry, database) could not be reached; it may come back,
    so tasks retry it, unlike refusals and bad input."""


class WorkRefused(MlopsError):
    """The work ran, and its rules refused the result (a rejected batch, a failed gate)."""

    exit_code = 1


class BatchRejected(WorkRefused):
    """A batch broke its contract beyond the allowed quarantine share."""


class GateFailed(WorkRefused):
    """A candidate model failed one or more gates; every failure is listed."""


class ChainBroken(WorkRefused):
    """The audit hash chain does not verify."""


def validation_problems(exc: ValidationError, raw: Any = None) -> str:
    """pydantic's report as one line per problem a person can act on: where (list items named
    by their ``name`` when ``raw``, the validated input, gives one: ``columns[age].dtype``), what,
    and the value given; without pydantic's "Value error, " prefixes and documentation links."""
    return "; ".join(
        f"{_location(err['loc'], raw) or exc.title}: {plain_message(err['msg'])}"
        + ("" if _says_its_input(err) else f" (got {_short(err.get('input'))})")
        for err in exc.errors()
    )


def _says_its_input(err: Any) -> bool:
    """No "(got ...)" for a missing field, nor for a check of the whole object (a model
    validator: its input is every field, and its message names the values it is about)."""
    return bool(err["type"] == "missing" or (not err["loc"] and isinstance(err.get("input"), dict)))


def plain_message(message: str) -> str:
    """A pydantic error message without its "Value error, " / "Assertion failed, " prefix."""
    return re.sub(r"^(Value error|Assertion failed), ", "", message)


def _location(loc: tuple[int | str, ...], raw: Any) -> str:
    parts: list[str] = []
    node = raw
    for step in loc:
        item = node[step] if isinstance(step, int) and isinstance(node, list) and step < len(node) else None
        if isinstance(step, int):
            named = item.get("name") if isinstance(item, dict) else None
            parts[-1:] = [f"{parts[-1] if parts else ''}[{named if named is not None else step}]"]
            node = item
        else:
            parts.append(step)
            node = node.get(step) if isinstance(node, dict) else None
    return ".".join(parts)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
