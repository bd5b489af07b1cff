"""Close the MLflow runs that an interrupted attempt at an evaluation left RUNNING.

Why: a process killed during ``evaluate_variants`` (SIGKILL, a crash, the machine going down) cannot end
its runs, so MLflow would show the parent and variant runs of that attempt as running forever, beside the
runs of the attempt that ``run --resume`` makes. Every run of an evaluation carries the
:data:`EVALUATION_KEY_TAG` tag, the same for every attempt at one evaluation (the pipeline uses the
execution id and the evaluated data's hash). The next attempt marks the runs still RUNNING under its key
KILLED, with :data:`ABANDONED_TAG` saying why, before it starts its own. Finished, failed or killed runs
are left as they are; so are runs under other keys (another execution, another shard's data).

Only one attempt at an evaluation runs at a time: a local run holds the endpoint lock for the whole
execution, and a SageMaker step is retried only after its attempt ended.

Usage::

    closed = close_abandoned_runs(mlflow.MlflowClient(), experiment_id, key)
    with mlflow.start_run(experiment_id=experiment_id, tags={EVALUATION_KEY_TAG: key}):
        ...
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

__all__ = ["ABANDONED_TAG", "EVALUATION_KEY_TAG", "close_abandoned_runs"]

EVALUATION_KEY_TAG = "agent_release.evaluation_key"
ABANDONED_TAG = "agent_release.abandoned"
ABANDONED_NOTE = "its process stopped before the run ended; a later attempt evaluated again"

# The key goes into an MLflow filter string between single quotes, which MLflow cannot escape.
_KEY = re.compile(r"[A-Za-z0-9._:@/+=-]{1,250}")


def check_evaluation_key(key: str) -> str:
    """``key`` if it can be searched for as an MLflow tag value; ValueError (one line) otherwise."""
    if not _KEY.fullmatch(key):
        raise ValueError(
            f"evaluation key {key!r} must be 1-250 letters, digits or any of . _ : @ / + = - (no quotes)"
        )
    return key


def close_abandoned_runs(client: MlflowClient, experiment_id: str, key: str) -> list[str]:
    """Mark the runs of ``experiment_id`` still RUNNING under evaluation ``key`` KILLED; return their ids."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{EVALUATION_KEY_TAG}` = '{check_evaluation_key(key)}' AND attributes.status = 'RUNNING'"
        ),
        max_results=1000,
    )
    closed = []
    for run in runs:
        run_id = run.info.run_id
        client.set_tag(run_id, ABANDONED_TAG, ABANDONED_NOTE)
        client.set_terminated(run_id, status="KILLED")
        closed.append(run_id)
    if closed:
        logger.info(
            "key=<%s>, runs=<%s> | marked the runs of an interrupted evaluation KILLED", key, ",".join(closed)
        )
    return closed
