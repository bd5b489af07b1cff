"""Request headers of SageMaker Runtime the local runtime checks as SageMaker does, before any routing.

botocore validates a parameter's presence, type and minimum length on the client, never its pattern or
maximum length: SageMaker's service does that, and answers ``ValidationError`` (400). Checked here:

- ``X-Amzn-SageMaker-Session-Id``: the pattern and the 256-character limit of botocore's service model;
  ``NEW_SESSION`` only on ``InvokeEndpoint`` (``InvokeEndpointWithResponseStream`` cannot open a session,
  and its answer has no header that could carry the new session's id).
- Headers that select a model the local endpoints never have: ``X-Amzn-SageMaker-Target-Model`` (a
  multi-model endpoint's model), ``X-Amzn-SageMaker-Inference-Component`` (an inference component) and
  ``X-Amzn-SageMaker-Target-Container-Hostname`` (a container of a direct-invocation pipeline). SageMaker
  refuses each on an endpoint of production variants; ignoring them would answer from a model the caller
  did not ask for.

Call :func:`header_error` with what the request carried; it returns the message of the ValidationError, or
None when the headers are acceptable. Other request headers are accepted and not used (see
docs/ARCHITECTURE.md, "The local endpoint runtime").
"""

from __future__ import annotations

import re

NEW_SESSION = "NEW_SESSION"
SESSION_ID_MAX = 256
# botocore's sagemaker-runtime model: SessionId (InvokeEndpoint allows NEW_SESSION besides this).
SESSION_ID_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$"
_SESSION_ID = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*")

# Header -> why SageMaker refuses it on an endpoint of production variants ({endpoint} is filled in).
UNSUPPORTED_HEADERS: dict[bytes, str] = {
    b"x-amzn-sagemaker-target-model": (
        "Endpoint {endpoint} is not a multi-model endpoint and does not support target model header."
    ),
    b"x-amzn-sagemaker-inference-component": (
        "Endpoint {endpoint} has no inference components: it serves production variants, so the "
        "Inference Component Name header selects nothing. Leave it out, or name a variant with TargetVariant."
    ),
    b"x-amzn-sagemaker-target-container-hostname": (
        "Endpoint {endpoint} is not configured for direct invocation: it does not support the target "
        "container hostname header."
    ),
}


def _constraint(value: str, member: str, constraint: str) -> str:
    """SageMaker's wording for a parameter that fails its model constraint."""
    return (
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: "
        f"Member must {constraint}"
    )


def header_error(endpoint: str, stream: bool, session_id: str | None, refused: bytes | None) -> str | None:
    """Why SageMaker would refuse these headers (a ValidationError message), or None when they are fine.

    ``refused`` is a header of :data:`UNSUPPORTED_HEADERS` the request carried, if any.
    """
    if refused is not None:
        return UNSUPPORTED_HEADERS[refused].format(endpoint=endpoint)
    if session_id is None:
        return None
    if session_id == NEW_SESSION:
        if stream:
            return (
                "InvokeEndpointWithResponseStream cannot create a stateful session: open it with "
                "InvokeEndpoint (SessionId NEW_SESSION), then stream with the session ID it returns."
            )
        return None
    if len(session_id) > SESSION_ID_MAX:
        return _constraint(session_id, "sessionId", f"have length less than or equal to {SESSION_ID_MAX}")
    if not _SESSION_ID.fullmatch(session_id):
        pattern = SESSION_ID_PATTERN if stream else f"^({NEW_SESSION})$|{SESSION_ID_PATTERN}"
        return _constraint(session_id, "sessionId", f"satisfy regular expression pattern: {pattern}")
    return None
