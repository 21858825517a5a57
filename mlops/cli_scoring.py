"""``mlops score``, ``mlops audit verify|find`` and ``mlops reproduce`` (registered by :mod:`mlops.cli`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.cli import MODEL_HELP, child_commands, needs_child_command, wrong_file_hint
from mlops.errors import InputError
from mlops.model_spec import DEFAULT_MODEL_NAME
from mlops.scoring import DEFAULT_CHUNK_ROWS, check_rescore_resume, check_share
from mlops.scoring_input import DEFAULT_VALIDATION_CHUNK_ROWS

if TYPE_CHECKING:
    from mlops.cli import Registrar

Outcome = tuple[int, dict[str, Any], str]


def cmd_score(args: argparse.Namespace) -> Outcome:
    from flows.score_batch import score_batch
    from mlops.batch_io import check_batch_source

    check_batch_source(args.path)  # before a flow (and maybe a temporary Prefect server) starts
    check_share(args.canary_share)
    check_rescore_resume(args.rescore, args.resume)
    for name in ("chunk_rows", "validation_chunk_rows"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be positive")
    with wrong_file_hint(
        "mlops score takes a batch of applications; a batch of outcomes goes to mlops outcomes"
    ):
        result = score_batch(
            source=args.path,
            model=args.model,
            canary_share=args.canary_share,
            chunk_rows=args.chunk_rows,
            validation_chunk_rows=args.validation_chunk_rows,
            rescore=args.rescore,
            resume=args.resume,
        )
    v = result.validation
    if not result.accepted:
        text = (
            f"{v.rows_read} rows read, {v.rows_quarantined} quarantined ({v.quarantined_share:.2%}) -> "
            "rejected, nothing scored: " + "; ".join(result.rejection_reasons)
        )
        text = "\n".join([text, *v.detail_lines()])
        return 1, result.model_dump(mode="json"), text
    lines = [
        f"{v.rows_read} rows read, {v.rows_quarantined} quarantined, {result.rows_scored} scored by "
        f"{result.model_name} v{result.champion_version}"
        + (f" with challenger v{result.challenger_version}" if result.challenger_version else ""),
        "decisions: "
        + ", ".join(f"{k} {n}" for k, n in result.decisions.items())
        + f"; routed to review {result.routed_to_review} ({result.review_cases_opened} cases opened"
        + (
            f", {result.review_cases_superseded} earlier open cases of the same applications superseded)"
            if result.review_cases_superseded
            else ")"
        ),
    ]
    lines += v.detail_lines()
    lines += [f"note: {note}" for note in result.notes]
    if result.resumed:
        lines.insert(
            0,
            f"resumed batch {result.batch_id}: {result.rows_already_scored} rows were written by an "
            "earlier run; the counts below are this run's",
        )
    if result.canary_share_requested > 0:
        lines.append(
            f"canary: {result.canary_rows} rows decided by the challenger ({result.canary_share_realised:.2%}"
            f" of {result.canary_share_requested:.2%} requested)"
            if result.canary_active
            else "canary: no challenger, the champion decided every row"
        )
    if result.shadow_agreement is not None:
        lines.append(
            f"shadow: same decision as the champion on {result.shadow_agreement:.2%} of rows, "
            f"mean |score diff| {result.shadow_mean_abs_score_diff:.5f}"
        )
    lines.append(
        f"audit: {result.audit_records_written} records (seq {result.audit_first_seq}..{result.audit_last_seq})"
    )
    return 0, result.model_dump(mode="json"), "\n".join(lines)


def cmd_audit(args: argparse.Namespace) -> Outcome:
    from mlops.audit import (
        export_anchor,
        load_anchors,
        open_existing_audit_store,
        stored_anchors,
        verify_chain,
    )
    from mlops.audit_verify import CASES_HINT
    from mlops.settings import get_settings
    from mlops.storage import make_store

    settings = get_settings()
    anchors = load_anchors(*args.anchor_file)
    engine = open_existing_audit_store(settings)
    try:
        anchors += stored_anchors(make_store(settings))
        report = verify_chain(engine, anchors=anchors, anchor=args.anchor)
    finally:
        engine.dispose()
    data = report.model_dump(mode="json")
    brk = report.first_break
    if brk is not None:
        vouched = (
            f"{report.records_checked} records before it verified"
            if brk.untrusted_from == brk.seq
            else f"the anchors vouch for seq 1..{brk.untrusted_from - 1} only"
        )
        text = (
            f"audit chain BROKEN at seq {brk.seq} ({brk.kind}): record {brk.record_id or '(missing)'}: {brk.detail}\n"
            f"  {vouched}; treat records from seq {brk.untrusted_from} on as untrusted"
        )
        return 1, data, text
    text = (
        f"audit chain intact: {report.records_checked} records, head seq {report.last_seq} "
        f"({report.last_hash[:16]}...), {report.anchors_checked} anchor(s) checked"
    )
    if report.anchors_checked == 0 and report.last_seq > 0:
        text += (
            "\n  no anchor checked: records deleted from the end together with a rewritten chain head, "
            "or a whole rewrite with recomputed hashes, would pass; anchor the head now and then "
            "(--anchor --export-anchor FILE) and keep the file off this database"
        )
    if report.guards_missing:
        text += (
            f"\n  warning: the append-only triggers {', '.join(report.guards_missing)} are missing (dropped by "
            "someone with DDL rights); the next command that opens the store installs them again and "
            "records it (a guards_restored record)"
        )
    if report.guards_restored:
        text += (
            f"\n  warning: {report.guards_restored} guards_restored record(s): the append-only triggers were "
            "found dropped and installed again; ask who had DDL rights then"
        )
    if args.export_anchor is not None:  # the chain is intact: its head is worth keeping either way
        data["exported_anchor"] = str(export_anchor(report.head_anchor(), args.export_anchor))
        text += f"\nhead written to {args.export_anchor}: keep it where the database's writers cannot edit it"
    cases = report.cases
    text += f"\nreview cases: {cases.cases_checked} checked against {cases.reviews_checked} review record(s)"
    if not cases.ok:
        text += f" -> {cases.problems_total} DISAGREE with the chain:\n" + "\n".join(
            f"  case {p.case_id}: {p.problem}" for p in cases.problems
        )
        text += f"\n  {CASES_HINT}"
        return 1, data, text
    return 0, data, text


def cmd_audit_find(args: argparse.Namespace) -> Outcome:
    from mlops.audit import open_existing_audit_store
    from mlops.audit_lookup import (
        application_id,
        find_entity,
        history_text,
        require_known_model,
        unscoped_ids,
    )
    from mlops.model_spec import model_spec_names
    from mlops.review_desk import applications_contract_for
    from mlops.settings import get_settings

    settings = get_settings()
    if args.model:  # the id as that model's contract keyed it
        entity_id, also = application_id(args.entity_id, applications_contract_for(args.model, settings)), []
    else:  # every model: each keyed it as its own contract says (text, or an int's value)
        entity_id, *also = unscoped_ids(args.entity_id)
    engine = open_existing_audit_store(settings, upgrade=True)  # an earlier release's store: review columns
    try:
        require_known_model(engine, args.model, model_spec_names())
        history = find_entity(engine, entity_id, settings.entity_hash_key, model_name=args.model, also=also)
    finally:
        engine.dispose()
    data = {**history.model_dump(mode="json"), "found": len(history.records)}
    return (0 if history.records else 1), data, history_text(entity_id, history)


def cmd_reproduce(args: argparse.Namespace) -> Outcome:
    from flows.reproduce import reproduce
    from mlops.reproduce import reproduce_text

    result = reproduce(prediction_id=args.prediction_id)
    data = {**result.model_dump(mode="json"), "reproduced": result.reproduced}
    return (0 if result.reproduced else 1), data, reproduce_text(result)


def register(add: Registrar) -> None:
    p = add(
        "score",
        cmd_score,
        "Score a batch (score_batch flow): the champion decides, the challenger shadows or canaries.",
    )
    p.add_argument("path", help="local path or s3:// URI of a .csv or .parquet batch of applications")
    p.add_argument("--model", default=DEFAULT_MODEL_NAME, help=MODEL_HELP)
    p.add_argument(
        "--canary-share",
        type=float,
        default=0.0,
        help="share of entities (keyed hash of the id) the challenger decides (default 0: shadow only)",
    )
    p.add_argument(
        "--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS, help="rows scored and audited at a time"
    )
    p.add_argument(
        "--validation-chunk-rows",
        type=int,
        default=DEFAULT_VALIDATION_CHUNK_ROWS,
        help="rows read and validated at a time (a batch up to this size is validated whole)",
    )
    p.add_argument(
        "--rescore",
        action="store_true",
        help="score rows this model already scored (refused by default: a second decision per "
        "application and new review cases)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="finish the unfinished batch of these rows (a run that failed part way): score only the "
        "rows it wrote no records for, with its model versions, decision policy and canary share",
    )

    audit_parser = add(
        "audit", needs_child_command, "The audit trail: verify the chain, find an application."
    )
    child = child_commands(audit_parser, "audit_command", ["verify", "find"])

    p = child("verify", cmd_audit, "Walk the hash chain; exit 1 names the first broken record and the kind.")
    p.add_argument(
        "--anchor-file",
        action="append",
        type=Path,
        default=[],
        help="an anchor exported off the database (repeatable); checked besides the stored anchors",
    )
    p.add_argument("--anchor", action="store_true", help="after a clean walk, record the head as an anchor")
    p.add_argument(
        "--export-anchor",
        type=Path,
        default=None,
        metavar="PATH",
        help="after a clean walk, write the head as an anchor file (to check later with --anchor-file)",
    )

    p = child(
        "find",
        cmd_audit_find,
        "Every audit record of one application (by its own id, keyed as scoring keyed it), with "
        "review case states and the prediction ids `mlops reproduce` takes.",
    )
    p.add_argument("entity_id", metavar="APPLICATION_ID", help="the application's id as in the batches")
    p.add_argument("--model", default=None, help="only records of this model")

    p = add("reproduce", cmd_reproduce, "Recompute a past prediction from its audit record, bit for bit.")
    p.add_argument("prediction_id", help="the prediction's audit record id")
