"""The ``mlops`` command: the door to the flows (docs/DESIGN.md "Doors"); ``simulate``,
``contract``, ``audit`` and ``review`` work on files and the stores and start no flow.

Every subcommand takes ``--json`` and then prints one JSON object as its last stdout line.
Exit codes: 0 success, 1 the work was refused (rejected batch, failed gate, broken chain),
2 bad usage or unreadable input, 3 an unexpected failure (a bug, or the environment).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from mlops.constants import NO_TELEMETRY_ENV, QUIET_MLFLOW_CONSOLE_ENV
from mlops.errors import ContractError, MissingColumns, MlopsError, plain_message, validation_problems
from mlops.model_spec import DEFAULT_MODEL_NAME

DISTRIBUTION: Final = "mlops-pipelines"  # pyproject.toml's project name
DESCRIPTION: Final = """\
The model's lifecycle from the command line: simulate data, validate batches
and outcomes, train (and rebuild), promote, score, review, audit, monitor,
retrain, roll back."""
EPILOG: Final = """\
Every command takes --json: then its last line of output is one JSON object.
Exit codes: 0 success; 1 the work was refused (rejected batch, failed gate,
broken chain); 2 bad usage or unreadable input; 3 an unexpected failure.
State (object store, audit database, MLflow registry) lives in MLOPS_HOME
(default .mlops); the other MLOPS_* settings are in README.md, "Settings".
mlops COMMAND --help lists a command's options."""

MODEL_HELP: Final = (
    f"model spec (model_specs/NAME.yaml) and registered model name (default {DEFAULT_MODEL_NAME})"
)

Handler = Callable[[argparse.Namespace], tuple[int, dict[str, Any], str]]
# add(name, handler, help) -> the subcommand's parser (with --json already on it).
Registrar = Callable[[str, Handler, str], argparse.ArgumentParser]

# Subcommands of each lifecycle stage live beside it: each module has ``register(add)``.
EXTENSIONS = ("mlops.cli_training", "mlops.cli_scoring", "mlops.cli_review", "mlops.cli_monitoring")


def _quiet_third_parties() -> None:
    """No network here and no telemetry anywhere, and no MLflow console noise between the
    command's lines: set before Prefect/GX/MLflow import (a value the user set stays)."""
    for name, value in {**NO_TELEMETRY_ENV, **QUIET_MLFLOW_CONSOLE_ENV}.items():
        os.environ.setdefault(name, value)
    # Without PREFECT_API_URL Prefect starts a temporary server; give it time on a busy machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


# Subcommands that never run a Prefect flow (they need not import Prefect).
_NO_FLOW_COMMANDS = frozenset({"simulate", "contract", "audit"})
# Subcommands that start no flow either (review works on the stores) or choose their own
# Prefect server (the demo, which refuses the production profile).
_NO_API_CHECK = _NO_FLOW_COMMANDS | {"review", "demo"}


class OurErrorsWithoutTraceback(logging.Filter):
    """Drops the traceback from Prefect's log of a failed run when the error is one of ours.

    Prefect logs every exception that ends a flow or task run with its traceback (about 80
    lines for an empty file). Our errors (bad input, refusals) already say what is wrong and
    what to do, and the CLI prints exactly that; the log line stays, without the traceback.
    Any other exception keeps its traceback.
    """

    def __init__(self) -> None:
        super().__init__()
        self.messages: set[str] = set()  # the first line of each of our errors seen
        self.once = OurErrorsOnceOnConsole(self)
        self.consoles: list[logging.Handler] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], MlopsError):
            self.messages.add(record.exc_info[1].message.splitlines()[0])
            record.exc_info, record.exc_text = None, None
            self._watch_consoles()
        elif record.levelno >= logging.ERROR and (ours := _quoted_error(record.getMessage())):
            # A task whose retry condition refused a retry logs only its final state, as text.
            self.messages.add(ours)
            self._watch_consoles()
        return True

    def _watch_consoles(self) -> None:
        """Filter the console handlers from now on (Prefect sets them up lazily, so they are
        looked up when our first error is logged, before this record reaches them)."""
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler not in self.consoles:
                handler.addFilter(self.once)
                self.consoles.append(handler)

    def close(self) -> None:
        for handler in self.consoles:
            handler.removeFilter(self.once)
        self.consoles.clear()


RUN_LOGGERS: Final = ("prefect.flow_runs", "prefect.task_runs")
_QUOTED_FAILURE: Final = re.compile(r"encountered an exception (\w+): (.+?)(?:\\n|\"\)|'\)|$)")


def _error_names(cls: type[BaseException] = MlopsError) -> set[str]:
    return {cls.__name__}.union(*(_error_names(sub) for sub in cls.__subclasses__()))


def _quoted_error(line: str) -> str | None:
    """The message of one of our errors quoted in a "Finished in state Failed(...)" line."""
    found = _QUOTED_FAILURE.search(line)
    return found.group(2) if found and found.group(1) in _error_names() else None


class OurErrorsOnceOnConsole(logging.Filter):
    """Keeps Prefect's lines about one of our errors off the console (they stay in the run's
    log the Prefect UI shows).

    Prefect logs a refusal four times as the task and the flow fail ("Task run failed with
    exception", "Finished in state Failed", twice); the CLI then prints it once with its hint.
    Only lines of the run loggers that quote an error :class:`OurErrorsWithoutTraceback` saw
    are dropped; every other line, and any other exception, stays.
    """

    def __init__(self, seen: OurErrorsWithoutTraceback) -> None:
        super().__init__()
        self.seen = seen

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.seen.messages or not record.name.startswith(RUN_LOGGERS):
            return True
        line = record.getMessage()
        return not any(message in line for message in self.seen.messages)


@contextmanager
def foreground_flows() -> Iterator[None]:
    """Flows the CLI runs in the foreground: without Prefect's heartbeat thread, without
    tracebacks in the log for our own errors (:class:`OurErrorsWithoutTraceback`) and without
    their repeats on the console (:class:`OurErrorsOnceOnConsole`).

    Heartbeats let the server notice an unattended run whose process died; the user of a
    foreground run sees that directly. In Prefect 3.9 a sync flow waits up to 1 s at exit for
    that thread (measured here: a trivial flow 1.2 s with it, 0.3 s without), which is most of
    an instant rollback. Runs of deployments (workers, ``serve``) keep their heartbeats.
    """
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    quiet = OurErrorsWithoutTraceback()
    loggers = [logging.getLogger(name) for name in RUN_LOGGERS]
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)
        quiet.close()


def _flow_settings(command: str) -> AbstractContextManager[None]:
    return nullcontext() if command in _NO_FLOW_COMMANDS else foreground_flows()


@contextmanager
def wrong_file_hint(hint: str) -> Iterator[None]:
    """A batch without its contract's columns is most often the wrong file for this command
    (outcomes given to ``mlops score``): the command's own hint replaces the generic one."""
    try:
        yield
    except MissingColumns as exc:
        exc.hint = hint
        raise


def _dump(model: BaseModel | dict[str, Any]) -> dict[str, Any]:
    return model.model_dump(mode="json") if isinstance(model, BaseModel) else model


# --- subcommands ------------------------------------------------------------------------------


def cmd_simulate(args: argparse.Namespace) -> tuple[int, dict[str, Any], str]:
    from mlops.simulator import SimulationConfig, simulate

    fields: dict[str, Any] = {"scenario": args.scenario, "days": args.days, "seed": args.seed}
    if args.drift_day is not None:
        fields["drift_day"] = args.drift_day
    if args.rows_per_day is not None:
        fields["rows_per_day"] = args.rows_per_day
    if args.format is not None:
        fields["file_format"] = args.format
    if args.incident_share is not None:
        fields["incident_share"] = args.incident_share
    if args.start_date is not None:
        fields["start_date"] = args.start_date
    config = SimulationConfig(**fields)
    manifest = simulate(config, Path(args.out), overwrite=args.overwrite)
    data = _dump(manifest)
    text = f"simulated {args.days} day(s) of scenario {args.scenario!r} into {args.out}"
    last_applied = config.start_date + timedelta(days=config.days - 1)
    last = last_applied + timedelta(days=config.outcome_delay_days)
    today = datetime.now(UTC).date()
    if last >= today:  # outcomes are observed through their arrival day
        dated = f"outcomes run to {last}"
        if last_applied >= today:  # applications through the day too: a day's later hours are ahead
            dated = f"applications run to {last_applied} and {dated}"
        text += (
            f"\nnote: the simulated {dated}, not before today ({today}); validation quarantines "
            "times in the future (in_future): pass an earlier --start-date"
        )
    return 0, {"out": str(args.out), **data}, text


def cmd_validate(args: argparse.Namespace) -> tuple[int, dict[str, Any], str]:
    from flows.validate_data import validate_data
    from mlops.batch_io import check_batch_source

    check_batch_source(args.path)  # before a flow (and maybe a temporary Prefect server) starts
    summary = validate_data(source=args.path, contract=args.contract)
    verdict = "accepted" if summary.accepted else "rejected: " + "; ".join(summary.rejection_reasons)
    text = (
        f"{summary.rows_read} rows read, {summary.rows_valid} valid, "
        f"{summary.rows_quarantined} quarantined ({summary.quarantined_share:.2%}) -> {verdict}"
    )
    text = "\n".join([text, *summary.detail_lines()])
    return (0 if summary.accepted else 1), _dump(summary), text


def cmd_contract_compile(args: argparse.Namespace) -> tuple[int, dict[str, Any], str]:
    from mlops.contracts import load_contract
    from mlops.gx_suite import write_compiled_suite
    from mlops.settings import get_settings

    settings = get_settings()
    names = args.names or sorted(p.stem for p in settings.contracts_dir.glob("*.yaml"))
    if not names:
        raise ContractError(
            f"no data contracts (*.yaml) in {settings.contracts_dir}",
            hint="check MLOPS_CONTRACTS_DIR (data_contracts/ of the checkout by default)",
        )
    written = [
        str(write_compiled_suite(load_contract(settings.contracts_dir, n), settings.contracts_dir))
        for n in names
    ]
    return 0, {"written": written}, "\n".join(f"wrote {w}" for w in written)


def cmd_demo(args: argparse.Namespace) -> tuple[int, dict[str, Any], str]:
    from mlops.demo import run_demo

    result = run_demo(Path(args.workdir))
    return 0, result, str(result.pop("report", "demo finished"))


# --- parser -----------------------------------------------------------------------------------


def child_commands(
    parent: argparse.ArgumentParser, dest: str, names: Sequence[str]
) -> Callable[[str, Handler, str], argparse.ArgumentParser]:
    """``mlops PARENT CHILD`` commands (``review list``, ``audit find``): returns
    ``child(name, handler, help)``; ``--json`` works before or after the child's name."""
    sub = parent.add_subparsers(dest=dest, required=True, metavar="{" + ",".join(names) + "}")

    def child(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        # SUPPRESS: `mlops PARENT --json CHILD` keeps the parent's --json.
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object")
        p.set_defaults(handler=handler, command_parser=p)
        return p

    return child


def needs_child_command(args: argparse.Namespace) -> tuple[int, dict[str, Any], str]:
    """The handler of a parent command (argparse requires a child before it gets here)."""
    return 2, {"error": f"mlops {args.command} needs a subcommand (see mlops {args.command} --help)"}, ""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlops",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
        p.set_defaults(handler=handler, command_parser=p)
        return p

    p = add("simulate", cmd_simulate, "Write seeded daily batches of simulated loan applications.")
    p.add_argument(
        "--scenario",
        default="stable",
        help="stable, covariate_shift, concept_drift, label_shift or data_quality_incident (default stable)",
    )
    p.add_argument("--days", type=int, default=10, help="days of applications (default 10)")
    p.add_argument("--drift-day", type=int, default=None, help="first day of the change (default days // 2)")
    p.add_argument("--seed", type=int, default=42, help="same seed, same files (default 42)")
    p.add_argument("--rows-per-day", type=int, default=None, help="clean applications per day (default 2000)")
    p.add_argument("--format", choices=["csv", "parquet"], default=None, help="file format (default csv)")
    p.add_argument(
        "--incident-share", type=float, default=None, help="data_quality_incident: share of damaged rows"
    )
    p.add_argument(
        "--start-date",
        type=date.fromisoformat,
        default=None,
        help="calendar date of day 0, YYYY-MM-DD (default 2025-01-01)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an earlier simulation in --out")
    p.add_argument("--out", required=True, help="folder for the batches (new or empty unless --overwrite)")

    p = add("validate", cmd_validate, "Validate a batch against its data contract (validate_data flow).")
    p.add_argument("path", help="local path or s3:// URI of a .csv or .parquet batch")
    p.add_argument(
        "--contract",
        default="credit_applications",
        help="data contract name: a file in data_contracts/ (default credit_applications)",
    )

    child = child_commands(
        add("contract", needs_child_command, "Data contract tools."), "contract_command", ["compile"]
    )
    p = child("compile", cmd_contract_compile, "Compile contracts to the GX suites kept beside them.")
    p.add_argument("names", nargs="*", help="contract names (default: all)")

    p = add("demo", cmd_demo, "Run the lifecycle on simulated data with embedded defaults.")
    p.add_argument("--workdir", default=".demo", help="folder for the demo's data and state (default .demo)")

    import importlib
    import importlib.util

    for module in EXTENSIONS:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module).register(add)
    return parser


def _validation_message(exc: ValidationError) -> str:
    """Name what was wrong the way the user set it: ``MLOPS_<FIELD>`` for a setting."""
    if exc.title != "Settings":
        return "invalid arguments: " + validation_problems(exc)
    problems = [
        f"MLOPS_{'_'.join(str(p) for p in err['loc']).upper()}: {plain_message(err['msg'])} (got {err.get('input')!r})"
        for err in exc.errors()
    ]
    return "invalid setting(s): " + "; ".join(problems)


EXIT_UNEXPECTED: Final = 3


def _unexpected(exc: Exception, *, traceback_shown: bool) -> tuple[int, dict[str, Any], str]:
    """An exception none of our checks expected: a bug, or the environment (a disk, a service).

    Exit 3, so scripts can tell it from a refusal (1) or bad input (2). A flow run has logged
    the traceback already (on the console and in the Prefect UI); otherwise it is printed here.
    """
    if not traceback_shown:
        traceback.print_exception(exc, file=sys.stderr)
    message = f"unexpected {type(exc).__name__}: {exc}"
    print(f"error: {message}", file=sys.stderr)
    hint = (
        "not a refusal of the input: a bug or a problem of the environment (disk, service); "
        "the traceback is above" + (" and in the flow run's log" if traceback_shown else "")
    )
    print(f"  -> {hint}", file=sys.stderr)
    return EXIT_UNEXPECTED, {"ok": False, "error": message, "hint": hint, "unexpected": True}, ""


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_third_parties()
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # named by the subcommand's own usage, not the top level's
            args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exc:  # argparse: 2 on bad usage (its message on stderr), 0 on --help
        code = int(exc.code or 0)
        words = sys.argv[1:] if argv is None else list(argv)
        if code and "--json" in words:  # the promised last line, even for a usage error
            print(json.dumps({"ok": False, "error": "invalid usage (see the message above)"}))
        return code
    as_json: bool = getattr(args, "json", False)
    try:
        if args.command not in _NO_FLOW_COMMANDS:
            from mlops.settings import get_settings

            # A bad MLOPS_* value: one clear line now, not a traceback from the flow.
            settings = get_settings()
            if args.command not in _NO_API_CHECK:
                from mlops.events import check_prefect_api

                check_prefect_api(production=settings.profile == "production")
        with _flow_settings(args.command):
            code, data, text = args.handler(args)
    except MlopsError as exc:
        code, data = exc.exit_code, {"ok": False, "error": exc.message, "hint": exc.hint}
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  -> {exc.hint}", file=sys.stderr)
        text = ""
    except ValidationError as exc:
        message = _validation_message(exc)
        code, data, text = 2, {"ok": False, "error": message}, ""
        print(f"error: {message}", file=sys.stderr)
    except Exception as exc:  # the last line: still one clear message, exit code and JSON line
        code, data, text = _unexpected(exc, traceback_shown=args.command not in _NO_FLOW_COMMANDS)
    else:
        data = {"ok": code == 0, **data}
    if text:
        print(text)
    if as_json:
        print(json.dumps(data, default=str))
    return code


if __name__ == "__main__":
    sys.exit(main())
