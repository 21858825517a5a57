"""Names used across the product, defined once (aliases, tags, events, roles)."""

from __future__ import annotations

from typing import Final

# Registry aliases (never MLflow stages).
ALIAS_CHAMPION: Final = "champion"
ALIAS_CHALLENGER: Final = "challenger"

# Prefect custom events (docs/DESIGN.md "Events").
EVENT_DATA_VALIDATED: Final = "mlops.data.validated"
EVENT_DATA_REJECTED: Final = "mlops.data.rejected"
EVENT_DRIFT_DETECTED: Final = "mlops.drift.detected"
EVENT_PERFORMANCE_DEGRADED: Final = "mlops.performance.degraded"
EVENT_MODEL_REGISTERED: Final = "mlops.model.registered"
EVENT_SHADOW_COMPLETED: Final = "mlops.shadow.completed"
EVENT_MODEL_PROMOTED: Final = "mlops.model.promoted"
EVENT_MODEL_ROLLED_BACK: Final = "mlops.model.rolled_back"


# No telemetry or analytics from any library, in every process the product starts or runs in
# (set before the library is imported; each library reads its own switch: MLflow honours only
# MLFLOW_DISABLE_TELEMETRY=true or DO_NOT_TRACK=true, not DO_NOT_TRACK=1).
NO_TELEMETRY_ENV: Final[dict[str, str]] = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}

# Not telemetry, console noise: MLflow's tqdm bars ("Downloading artifacts") on stderr each time
# a model is loaded, and its "View run ... / View experiment ..." lines on stdout (with a
# tracking server), between the command's own lines. The CLI sets them unless the user did.
QUIET_MLFLOW_CONSOLE_ENV: Final[dict[str, str]] = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


def dataset_resource(contract_name: str) -> str:
    """Prefect resource id of a dataset (data events)."""
    return f"mlops.dataset.{contract_name}"


def model_resource(model_name: str) -> str:
    """Prefect resource id of a model (model events)."""
    return f"mlops.model.{model_name}"


# Column roles in a data contract.
ROLE_ID: Final = "id"
ROLE_FEATURE: Final = "feature"
ROLE_TARGET: Final = "target"
ROLE_TIMESTAMP: Final = "timestamp"
ROLE_SENSITIVE: Final = "sensitive"

# Column added to quarantined rows: why each row was set aside.
QUARANTINE_REASONS_COLUMN: Final = "_quarantine_reasons"

# Snapshot kinds in the object store.
KIND_VALID: Final = "valid"
KIND_QUARANTINE: Final = "quarantine"

# Where the decision policy a prediction is re-decided under (mlops reproduce) or shown to a
# reviewer under (mlops review show) comes from.
POLICY_RECORDED: Final = "recorded with the batch"  # the batch's intact scoring_batch record
POLICY_FROM_SPEC: Final = "model spec today"  # batches scored before such records existed
