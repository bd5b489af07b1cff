"""``agent-release package register`` and ``package list``: the local model registry from the command line.

The training step registers the demo's own models. A team evaluating a model it serves itself (an LLM behind
an OpenAI-compatible server, or a Python class answering chat completions) registers it here instead of
through the backend's Python API::

    agent-release package register --kind openai_compatible -o base_url=http://127.0.0.1:8080 -o model=qwen2.5
    agent-release package list

A package is registered ``PendingManualApproval``, so ``deploy.challenger: latest_pending`` deploys it as the
challenger. ``--approve`` approves it at once, but only as a group's *first* Approved package (the champion a
first comparison needs): once a group has a champion, a package becomes champion only through the gate.
That approval is written to the audit ledger first, as the training step's bootstrap approval is.

The options are checked before anything is written: unknown keys, a ``base_url`` that is not an http(s) URL,
a ``class_path`` that does not import or has no ``complete`` method, an ``init`` its constructor does not take.
Each is one line naming the option.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from agent_release.pipelines.backend_rules import check_package_group_name
from agent_release.pipelines.runtime.model_loader import MODEL_OPTIONS
from agent_release.steps.backend import ApprovalStatus, ModelPackage, ModelSpec
from agent_release.steps.ledger_actions import AUDIT_BOOTSTRAP_APPROVAL

if TYPE_CHECKING:
    from agent_release.pipelines.local_backend import LocalBackend

__all__ = [
    "REGISTRABLE_KINDS",
    "PackageOptionError",
    "check_model_options",
    "list_packages_command",
    "package_rows",
    "parse_options",
    "register_package_command",
]

# What the local runtime serves from a package a user registers. ``demo`` packages come from the training
# step (their artifact is the model it trained and saved); ``container`` is served by SageMaker only.
REGISTRABLE_KINDS = tuple(MODEL_OPTIONS)

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_TIMEOUT_S = 3600.0


class PackageOptionError(ValueError):
    """A ``package register`` option the runtime could not use; ``str()`` is one line naming it."""


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``["base_url=http://h:8080", "timeout_s=30", 'init={"size": 2}']`` -> a dict of options.

    A value that reads as JSON is taken as JSON (numbers, booleans, objects), anything else as a string, so
    ``timeout_s=30`` is a number and ``model=qwen2.5`` a string. A pair without ``=`` or a key given twice is
    refused.
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise PackageOptionError(
                f"option {pair!r} is not KEY=VALUE (e.g. -o base_url=http://127.0.0.1:8080)"
            )
        if key in options:
            raise PackageOptionError(f"option {key} is given twice")
        try:
            options[key] = json.loads(raw)
        except ValueError:
            options[key] = raw
    return options


def check_model_options(kind: str, options: Mapping[str, Any]) -> ModelSpec:
    """The :class:`ModelSpec` of ``kind`` with ``options``, or :class:`PackageOptionError` naming the problem.

    A ``python`` class is imported (from ``PYTHONPATH``, as the runtime will) but not instantiated: building
    it may load weights, which is the runtime's job.
    """
    if kind not in MODEL_OPTIONS:
        served = " or ".join(REGISTRABLE_KINDS)
        raise PackageOptionError(
            f"kind {kind!r} cannot be registered here: use {served} ('demo' packages come from the training "
            "step; 'container' runs on SageMaker only)"
        )
    # Anything but the options the runtime reads is a typo it would ignore, found only when the variant
    # behaves unlike what was meant.
    known = MODEL_OPTIONS[kind]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise PackageOptionError(
            f"{kind} model has no option {', '.join(unknown)} (its options: {', '.join(known)})"
        )
    required = known[0]
    if required not in options:
        raise PackageOptionError(f"{kind} model needs -o {required}=...")
    if kind == "openai_compatible":
        _check_openai_compatible(options)
    else:
        _check_python(options)
    return ModelSpec(kind=kind, options=dict(options))


def _check_openai_compatible(options: Mapping[str, Any]) -> None:
    base_url = options["base_url"]
    parts = urlsplit(base_url) if isinstance(base_url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise PackageOptionError(
            f"base_url must be the http(s) URL of the server's root, e.g. http://127.0.0.1:8080, got {base_url!r}"
        )
    if parts.query or parts.fragment:
        raise PackageOptionError(f"base_url {base_url!r} has a query or fragment: give the server's root")
    model = options.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        # A value that reads as JSON is taken as JSON: a model named 7 or 1.5 arrives as a number.
        # Only a number or a boolean can be quoted as it was written; a JSON object or list is no model name.
        scalar = isinstance(model, int | float)  # booleans too: json.dumps writes them back as typed
        hint = f" (read as JSON: quote it as text, -o 'model=\"{json.dumps(model)}\"')" if scalar else ""
        raise PackageOptionError(f"model must be the upstream's model name, got {model!r}{hint}")
    key_env = options.get("api_key_env")
    if key_env is not None and (not isinstance(key_env, str) or not _ENV_NAME.fullmatch(key_env)):
        raise PackageOptionError(
            f"api_key_env must name an environment variable (e.g. OPENAI_API_KEY), got {key_env!r}"
        )
    timeout = options.get("timeout_s")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or not 0 < timeout <= _MAX_TIMEOUT_S
    ):
        raise PackageOptionError(
            f"timeout_s must be a number of seconds above 0 and at most {_MAX_TIMEOUT_S:,.0f}, got {timeout!r}"
        )


def _check_python(options: Mapping[str, Any]) -> None:
    from agent_release.agents.user_imports import UserImportError, import_user_object

    class_path = options["class_path"]
    if not isinstance(class_path, str) or not re.fullmatch(r"[\w.]+:\w+", class_path):
        raise PackageOptionError(f"class_path must be 'package.module:ClassName', got {class_path!r}")
    init = options.get("init", {})
    if not isinstance(init, dict):
        raise PackageOptionError(
            f"init must be a JSON object of constructor arguments (-o 'init={{\"k\": 1}}'), got {init!r}"
        )
    try:
        cls = import_user_object("model class", class_path)
    except UserImportError as exc:
        from agent_release.pipelines.config_checks import import_path_hint

        # A module in the current directory gets the exact fix; otherwise say where the class is looked for.
        hinted = import_path_hint(str(exc), Path.cwd().resolve())
        if hinted == str(exc):
            hinted += " (the command and the runtime import it from PYTHONPATH)"
        raise PackageOptionError(hinted) from None
    if not callable(cls) or not callable(getattr(cls, "complete", None)):
        raise PackageOptionError(
            f"model class '{class_path}' has no complete(request) -> dict method (see ChatCompletionModel in "
            "agent_release.agents.chat_model)"
        )
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # a class whose constructor Python cannot describe: the runtime will tell
        return
    try:
        signature.bind(**init)
    except TypeError as exc:
        # Registered anyway, it cost a deploy and a whole evaluation of load errors before the gate rejected.
        raise PackageOptionError(f"init does not fit the constructor of {class_path}: {exc}") from None


def register_package_command(
    backend: LocalBackend,
    group: str,
    model: ModelSpec,
    *,
    actor: str,
    description: str = "",
    approve_reason: str | None = None,
) -> ModelPackage:
    """Register ``model`` as the next version of ``group``; approve it when ``approve_reason`` is given.

    With ``approve_reason`` the group must have no Approved package, and the ledger must be intact: both are
    checked before anything is written, so a refusal leaves nothing behind. Then, under the group's lock, the
    package is registered, the approval written to the ledger, and the package approved.
    """
    check_package_group_name(group)
    if approve_reason is None:
        backend.ensure_package_group(group)
        return backend.register_package(group, model, metadata=_metadata(description, actor))

    from agent_release.pipelines.local_backend import refuse_a_broken_ledger
    from agent_release.pipelines.state_db import check_audit_head

    check_audit_head(backend.state_dir)  # the approval is recorded: refuse before anything is written
    refuse_a_broken_ledger(backend)
    with backend.lock(f"package-group:{group}", f"{actor} pid {os.getpid()} (package register)"):
        champion = next(
            (
                p
                for p in reversed(backend.list_packages(group))
                if p.approval_status == ApprovalStatus.APPROVED
            ),
            None,
        )
        if champion is not None:
            raise ValueError(
                f"{group} already has an Approved package (v{champion.version}): a package becomes champion "
                "only through the gate; register it without --approve and run the pipeline"
            )
        backend.ensure_package_group(group)
        package = backend.register_package(group, model, metadata=_metadata(description, actor))
        reason = f"first champion of {group}, approved at registration: {approve_reason}"
        # Ledger first (as the training step's bootstrap approval): an approval the ledger never saw is worse
        # than a ledger entry for a package a crash left pending.
        backend.append_audit(
            actor,
            AUDIT_BOOTSTRAP_APPROVAL,
            package.arn,
            reason,
            evidence={
                "package_version": package.version,
                "model_kind": model.kind,
                "source": "package register",
            },
        )
        return backend.update_approval(package.arn, ApprovalStatus.APPROVED, f"{actor}: {approve_reason}")


def _metadata(description: str, actor: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"registered_by": actor, "source": "agent-release package register"}
    if description:
        metadata["description"] = description
    return metadata


def package_rows(packages: Sequence[ModelPackage]) -> list[dict[str, Any]]:
    """One JSON-ready row per package (newest first): version, status, kind, where it points, when."""
    rows = []
    for p in sorted(packages, key=lambda p: p.version, reverse=True):
        target = p.model.options.get("base_url") or p.model.options.get("class_path") or p.model.artifact_uri
        rows.append(
            {
                "group": p.group,
                "version": p.version,
                "arn": p.arn,
                "approval_status": p.approval_status.value,
                "kind": p.model.kind,
                "target": target,
                "model": p.model.options.get("model"),
                "created_at": p.created_at,
                "description": p.metadata.get("description") or p.approval_description,
            }
        )
    return rows


def list_packages_command(backend: LocalBackend, group: str) -> list[dict[str, Any]]:
    """The rows of ``group``'s packages; ValueError naming the groups that exist when it has none."""
    packages = backend.list_packages(group)
    if packages:
        return package_rows(packages)
    groups = backend.list_package_groups()
    known = f"groups here: {', '.join(groups)}" if groups else "no package is registered here yet"
    raise ValueError(f"model package group {group} has no packages ({known})")
