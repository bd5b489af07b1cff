"""A moto server over real HTTP on 127.0.0.1 for the AWS contract tests.

boto3 reaches it through ``AWS_ENDPOINT_URL`` with dummy SigV4 credentials, exactly as it reaches AWS. One
server serves the whole session (it starts in about a second) and stops by itself at the end; each test gets
its own bucket or names, and ``reset_moto`` gives a clean account where a test needs one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

REGION = "us-east-1"
ROLE_ARN = "arn:aws:iam::123456789012:role/agent-release-pipeline"


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """URL of a moto server bound to a free loopback port, with the AWS environment pointed at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in _ENV_KEYS}
    os.environ.update(
        AWS_ENDPOINT_URL=url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_SESSION_TOKEN="testing",
        AWS_DEFAULT_REGION=REGION,
        AWS_REGION=REGION,
        SAGEMAKER_VALIDATE_ROLE="false",
    )
    for key in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        os.environ.pop(key, None)
    try:
        yield url
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_ENV_KEYS = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "SAGEMAKER_VALIDATE_ROLE",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)


@pytest.fixture(scope="session")
def boto_session(moto_url: str) -> Any:
    """One boto3 session for the run: its loader cache makes each new client cheap."""
    import boto3

    return boto3.Session(region_name=REGION)


@pytest.fixture
def bucket(boto_session: Any) -> str:
    """A fresh, empty bucket on the moto server."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    boto_session.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def sagemaker_backend(bucket: str, boto_session: Any) -> Any:
    """A SageMakerBackend on a fresh bucket of the moto server, polling quickly."""
    from agent_release.pipelines.sagemaker_backend import SageMakerBackend

    return SageMakerBackend(
        bucket=bucket,
        role_arn=ROLE_ARN,
        region=REGION,
        session=boto_session,
        poll_interval_s=1,
        wait_timeout_s=30,
    )
