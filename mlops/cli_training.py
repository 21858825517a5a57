"""CLI subcommands of the training stage: outcomes, train, promote."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from mlops.cli import MODEL_HELP, wrong_file_hint
from mlops.constants import ALIAS_CHALLENGER
from mlops.model_spec import DEFAULT_MODEL_NAME

if TYPE_CHECKING:
    from flows.train import TrainResult
    from mlops.cli import Registrar


def cmd_outcomes(args: argparse.Namespace) -> tuple[int, dict[str, Any], str]:
    """Validate and store a delayed outcomes batch; re-ingesting the same batch changes nothing."""
    from flows.validate_data import validate_data
    from mlops.batch_io import check_batch_source
    from mlops.model_spec import load_model_spec

    check_batch_source(args.path)  # before a flow (and maybe a temporary Prefect server) starts
    spec = load_model_spec(args.model)
    with wrong_file_hint(
        f"mlops outcomes takes a batch of delayed outcomes (contract {spec.outcomes_contract}); "
        "a batch of applications goes to mlops score (or mlops validate)"
    ):
        summary = validate_data(source=args.path, contract=spec.outcomes_contract)
    data: dict[str, Any] = summary.model_dump(mode="json")
    text = (
        f"outcomes: {summary.rows_read} rows read, {summary.rows_valid} valid, "
        f"{summary.rows_quarantined} quarantined -> "
        + ("stored" if summary.accepted else "rejected: " + "; ".join(summary.rejection_reasons))
    )
    text = "\n".join([text, *summary.detail_lines()])
    if summary.accepted:
        from mlops.performance import join_outcomes_after_ingest

        report = join_outcomes_after_ingest(args.model)
        data["performance"] = report.model_dump(mode="json")
        text += "\n" + report.summary_text()
        if report.join.conflicting_outcomes:
            text += (
                f"\nwarning: {report.join.conflicting_outcomes} application id(s) have outcomes with "
                "different labels across the stored batches; the most recently observed one counts, "
                "and on equal observation times the batch ingested last (check where the batches "
                "came from)"
            )
    return (0 if summary.accepted else 1), data, text


def cmd_train(args: argparse.Namespace) -> tuple[int, dict[str, Any], str]:
    from flows.train import train

    result = train(model=args.model)
    return (0 if result.passed else 1), result.model_dump(mode="json"), train_text(result)


def cmd_rebuild(args: argparse.Namespace) -> tuple[int, dict[str, Any], str]:
    from flows.rebuild import rebuild
    from mlops.rebuild import rebuild_text

    result = rebuild(version=args.version, model=args.model)
    return (
        (0 if result.identical and result.rows_match else 1),
        result.model_dump(mode="json"),
        rebuild_text(result),
    )


def train_text(result: TrainResult) -> str:
    """The verdict, the key metrics, the failures, the record and what to do next."""
    auc = f"AUC {result.metrics['auc']:.4f}"
    if result.champion_metrics is not None:
        auc += f" vs champion v{result.champion_version} {result.champion_metrics['auc']:.4f}"
    elif result.champion_version is not None:
        auc += f" (champion v{result.champion_version} could not score them)"
    lines = [
        f"{result.model_name} v{result.version}: verdict {result.verdict}"
        + (f", alias {result.alias}" if result.alias else ", no alias"),
        f"{auc} on {result.evaluation_rows} evaluation rows ({result.training_rows} training rows)",
    ]
    if result.comparison_rows is not None:
        lines.append(
            f"the champion comparison (non-inferiority) used {result.comparison_rows} of these rows"
            + (f": {result.comparison_note}" if result.comparison_note else "")
            + f"; the champion's AUC above is on all {result.evaluation_rows}"
        )
    lines += [f"failed gate: {failure}" for failure in result.failures]
    lines.append(f"decision record: {result.decision_record_uri}")
    promote = f"mlops promote --model {result.model_name}"
    if result.alias == ALIAS_CHALLENGER and result.champion_version is None:
        lines.append(f"  -> {promote} makes it the first champion")
    elif result.alias == ALIAS_CHALLENGER:
        lines.append(
            f"  -> it shadows champion v{result.champion_version} in mlops score; once it has "
            f"shadowed enough scored rows with outcomes, {promote} compares the two"
        )
    elif not result.passed:
        lines.append("  -> the decision record says why; fix the data or the spec and run mlops train again")
    return "\n".join(lines)


def cmd_promote(args: argparse.Namespace) -> tuple[int, dict[str, Any], str]:
    from flows.promote import promote

    result = promote(model=args.model, approver=args.approver)
    data = result.model_dump(mode="json")
    # Refusals (worse challenger, rejected approval) raise WorkRefused -> exit 1 in main().
    return 0, data, f"{args.model}: champion is version {data.get('champion_version')}"


def register(add: Registrar) -> None:
    p = add("outcomes", cmd_outcomes, "Validate and store a batch of delayed outcomes (labels).")
    p.add_argument("path", help="local path or s3:// URI of a .csv or .parquet outcomes batch")
    p.add_argument("--model", default=DEFAULT_MODEL_NAME, help=MODEL_HELP)
    p = add("train", cmd_train, "Train, evaluate, gate and register a candidate (train flow).")
    p.add_argument("--model", default=DEFAULT_MODEL_NAME, help=MODEL_HELP)
    p = add(
        "rebuild",
        cmd_rebuild,
        "Retrain a registered version from its lineage and compare it bit for bit (rebuild flow).",
    )
    p.add_argument("version", type=int, metavar="VERSION", help="the model version to rebuild")
    p.add_argument("--model", default=DEFAULT_MODEL_NAME, help=MODEL_HELP)
    p = add("promote", cmd_promote, "Promote the challenger to champion (promote flow).")
    p.add_argument("--model", default=DEFAULT_MODEL_NAME, help=MODEL_HELP)
    p.add_argument("--approver", default=None, help="who approves (must be an allowed approver)")
