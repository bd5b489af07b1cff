"""Every test starts with the process's MLflow URIs as the session found them.

``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI``, so a test that configures tracking in-process
would otherwise redirect every later CLI subprocess of the same worker to its temporary store (the pipeline
honours that variable). This puts the variables back after each test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(autouse=True)
def _restore_mlflow_uri_variables() -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in _URI_VARIABLES}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
