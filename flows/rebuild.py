"""rebuild: retrain a registered version from its lineage and compare it bit for bit."""

from __future__ import annotations

from prefect import flow

from mlops.model_spec import DEFAULT_MODEL_NAME
from mlops.rebuild import RebuildResult, rebuild_text
from mlops.settings import flow_settings
from tasks.rebuild import compare_rebuilt_task, gather_lineage_rows_task, read_lineage_task
from tasks.training import prepare_training_matrix_task, split_task, train_candidate_task


@flow(name="rebuild", log_prints=True)
def rebuild(version: int, model: str = DEFAULT_MODEL_NAME) -> RebuildResult:
    """Rebuild ``model`` version ``version`` from the snapshots, review labels, spec and seed its
    lineage names, and compare the result with the registered model (``identical``).

    Nothing is registered or changed: the rebuilt model is only compared."""
    settings = flow_settings()
    plan, bundle = read_lineage_task(model, version, settings)
    labelled = gather_lineage_rows_task(plan, bundle, settings)
    split = split_task(labelled, bundle)
    ready = prepare_training_matrix_task(split.train, bundle.spec)
    rebuilt = train_candidate_task(ready, bundle.spec)
    result = compare_rebuilt_task(plan, bundle, rebuilt, len(split.train), len(split.evaluation))
    print(rebuild_text(result))
    return result
