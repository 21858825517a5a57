"""One root exception for the product, with narrow subclasses that say what to do."""

from __future__ import annotations


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
