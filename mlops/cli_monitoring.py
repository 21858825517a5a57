"""CLI subcommands of the monitoring stage: monitor, retrain, rollback."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from mlops.cli import MODEL_HELP
from mlops.model_spec import DEFAULT_MODEL_NAME

if TYPE_CHECKING:
    from mlops.cli import Registrar


def cmd_monitor(args: argparse.Namespace) -> tuple[int, dict[str, Any], str]:
    """Drift found is not a refusal (exit 0, ``alarm`` in the JSON); a broken chain is (exit 1)."""
    from flows.monitor import monitor_drift

    result = monitor_drift(model=args.model)
    text = result.message
    if result.report_uri:
        text += f"\ndrift report: {result.report_uri}"
    return 0, result.model_dump(mode="json"), text


def cmd_retrain(args: argparse.Namespace) -> tuple[int, dict[str, Any], str]:
    """A skipped retrain is a successful run that says why (exit 0); a candidate that fails its
    gates exits 1, as with ``mlops train`` (it is still registered, without an alias)."""
    from flows.retrain import retrain

    result = retrain(model=args.model, severity="manual", reason=args.reason or "", force=args.force)
    code = 0
    if result.ran and result.train is not None:
        text = f"{args.model}: retrained -> version {result.train.version} ({result.train.verdict})"
        if not result.train.passed:
            code = 1
            text += f" — failed its gates; decision record: {result.train.decision_record_uri}"
    else:
        text = f"{args.model}: retrain skipped: {result.reason}"
    return code, result.model_dump(mode="json"), text


def cmd_rollback(args: argparse.Namespace) -> tuple[int, dict[str, Any], str]:
    from flows.rollback import rollback

    result = rollback(by=args.by, reason=args.reason, model=args.model, to_version=args.to)
    text = f"{args.model}: champion rolled back from version {result.from_version} to {result.to_version}"
    return 0, result.model_dump(mode="json"), text


def register(add: Registrar) -> None:
    p = add("monitor", cmd_monitor, "Check the champion for drift; emit an event when the alarm fires.")
    p.add_argument("--model", default=DEFAULT_MODEL_NAME, help=MODEL_HELP)
    p = add(
        "retrain",
        cmd_retrain,
        "Retrain now (idempotency key, cooldown, budget and a shadowing challenger apply; "
        "--force skips all but the idempotency key).",
    )
    p.add_argument("--model", default=DEFAULT_MODEL_NAME, help=MODEL_HELP)
    p.add_argument("--reason", default=None, help="why (kept in the run's summary)")
    p.add_argument(
        "--force",
        action="store_true",
        help="skip the cooldown, the budget and the wait for a shadowing challenger (the "
        "idempotency key still holds: the same data and spec never train twice)",
    )
    p = add("rollback", cmd_rollback, "Move the champion back to the previous champion (rollback flow).")
    p.add_argument("--model", default=DEFAULT_MODEL_NAME, help=MODEL_HELP)
    p.add_argument("--by", required=True, help="who rolls back")
    p.add_argument("--reason", required=True, help="why")
    p.add_argument(
        "--to", type=int, default=None, help="a former champion version (default: the previous one)"
    )
