"""Every test starts with the process's MLflow URIs as the session found them, and leaves no MLflow store behind
in the repository.

``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI``, so a test that configures tracking in-process
would otherwise redirect every later CLI subprocess of the same worker to its temporary store (the pipeline
honours that variable). This puts the variables back after each test, and turns off the Strands autologging a
test switched on (``configure_tracking`` does): left on, every later Strands agent of that worker is traced to
MLflow's default store, ``./mlflow.db``, once the test's own store is gone.

MLflow's defaults are relative to the working directory, which is the repository when the suite runs: the
tracking URI defaults to ``sqlite:///mlflow.db`` and a database store keeps artifacts under ``./mlruns``. A test
that touches MLflow without a temporary tracking URI (or creates an experiment without an artifact location)
litters the repository with them, so each test is checked for that. The variables are deliberately not set to a
temporary store by default: the pipeline's CLI honours ``MLFLOW_TRACKING_URI``, and the end-to-end tests check
where a run puts its store when nothing is configured.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
_REPO = Path(__file__).resolve().parents[1]
_MLFLOW_DEFAULT_STORES = ("mlflow.db", "mlruns")


@pytest.fixture(autouse=True)
def _restore_mlflow_uri_variables() -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in _URI_VARIABLES}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if "mlflow.strands" in sys.modules:  # imported only by a test that (maybe) turned autologging on
        from mlflow.strands import autolog
        from mlflow.utils.autologging_utils import autologging_is_disabled

        if not autologging_is_disabled(autolog.integration_name):
            autolog(disable=True, silent=True)


@pytest.fixture(autouse=True)
def _no_mlflow_store_in_the_repository() -> Iterator[None]:
    before = {name for name in _MLFLOW_DEFAULT_STORES if (_REPO / name).exists()}
    yield
    strays = [name for name in _MLFLOW_DEFAULT_STORES if name not in before and (_REPO / name).exists()]
    if not strays:
        return
    for name in strays:  # removed, so that the next test that leaves one is named too
        path = _REPO / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    pytest.fail(
        f"{', '.join(strays)} appeared in {_REPO} during this test (or one running beside it in another "
        "xdist worker): MLflow used its working-directory defaults. Point it at tmp_path "
        "(mlflow.set_tracking_uri(f'sqlite:///{tmp_path}/mlflow.db')) and give new experiments an "
        "artifact_location under tmp_path.",
        pytrace=False,
    )
