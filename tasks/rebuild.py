"""Tasks of the rebuild flow: read a version's lineage, gather its rows, compare the rebuilt model."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from mlops.contracts import load_contract
from mlops.errors import InputError
from mlops.labels import LabelledSet
from mlops.lineage import LINEAGE_ARTIFACT, git_state, installed_packages
from mlops.rebuild import (
    MODEL_SPEC_ARTIFACT,
    RebuildPlan,
    RebuildResult,
    labelled_from_lineage,
    rebuild_plan,
    rebuild_result,
    rebuild_text,
    require_lineage_tags,
)
from mlops.registry import make_registry, require_registered_model
from mlops.rollback import all_version_tags, listed_versions
from mlops.settings import PROJECT_ROOT, Settings
from mlops.storage import make_store
from mlops.training import TrainedModel
from tasks.retry import retry_unless_bad_input
from tasks.training import SpecBundle


@task(
    name="read-version-lineage",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_bad_input,
    cache_policy=NO_CACHE,
)
def read_lineage_task(model: str, version: int, settings: Settings) -> tuple[RebuildPlan, SpecBundle]:
    """The version's lineage and spec, checked against its tags, with the contracts it names."""
    registry = make_registry(settings)
    require_registered_model(registry, model)
    versions = all_version_tags(registry, model)
    if version not in versions:
        raise InputError(
            f"{model} has no version {version}",
            hint=f"its versions are {listed_versions(sorted(versions))}"
            if versions
            else f"it has none yet (mlops train --model {model})",
        )
    require_lineage_tags(model, version, versions[version])  # before reading its run's artifacts
    run_id = registry.version_run_id(model, version)
    plan = rebuild_plan(
        model,
        version,
        versions[version],
        run_id,
        registry.read_run_json(run_id, LINEAGE_ARTIFACT),
        registry.read_run_json(run_id, MODEL_SPEC_ARTIFACT),
        registered_fingerprint=registry.version_fingerprint(model, version),
    )
    bundle = SpecBundle(
        spec=plan.spec,
        applications=load_contract(settings.contracts_dir, plan.lineage.applications_contract),
        outcomes=load_contract(settings.contracts_dir, plan.lineage.outcomes_contract),
    )
    return plan, bundle


@task(
    name="gather-lineage-rows",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_bad_input,
    cache_policy=NO_CACHE,
)
def gather_lineage_rows_task(plan: RebuildPlan, bundle: SpecBundle, settings: Settings) -> LabelledSet:
    """Exactly the snapshots and review labels the lineage names, joined as the run joined them."""
    return labelled_from_lineage(make_store(settings), plan, bundle.applications, bundle.outcomes)


@task(name="compare-rebuilt-model", cache_policy=NO_CACHE)
def compare_rebuilt_task(
    plan: RebuildPlan, bundle: SpecBundle, rebuilt: TrainedModel, training_rows: int, evaluation_rows: int
) -> RebuildResult:
    """Fingerprints side by side, what changed since the run, and a Prefect artifact saying so."""
    result = rebuild_result(
        plan,
        fingerprint=rebuilt.fingerprint(),
        training_rows=training_rows,
        evaluation_rows=evaluation_rows,
        git_now=git_state(PROJECT_ROOT),
        packages_now=installed_packages(),
        contracts=(bundle.applications, bundle.outcomes),
    )
    create_markdown_artifact(
        key=f"rebuild-{plan.model_name}-v{plan.version}".lower().replace("_", "-"),
        markdown=f"# Rebuild of {plan.model_name} version {plan.version}\n\n```\n{rebuild_text(result)}\n```\n",
        description=f"{plan.model_name} v{plan.version} rebuilt from its lineage: "
        + ("DIFFERENT" if not result.identical else "identical" if result.rows_match else "ROWS DIFFER"),
    )
    return result
