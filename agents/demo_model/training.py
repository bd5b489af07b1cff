"""Fit the demo support model on ``train.jsonl`` (scikit-learn, CPU, a few seconds).

``train_support_model(path, seed=7, cohorts=["2026-q2"])`` reads the examples, keeps the chosen cohorts (in
file order, optionally only the first ``max_examples``), fits the intent and reason classifiers and the span
tagger, learns one plan per intent, and returns a :class:`TrainedModel`. The same data and seed give
identical coefficients and an identical saved file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from agent_release.agents.demo_model.features import intent_text, token_features, tokenize
from agent_release.agents.demo_model.model import OUTSIDE, PlanStep, TrainedModel

logger = logging.getLogger(__name__)


class TrainingDataError(ValueError):
    """The training file is missing, malformed or selects no examples (message is one line)."""


class ToolCall(BaseModel):
    """One step of an example's ideal trajectory."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    arguments: dict[str, Any]


class Span(BaseModel):
    """A labelled ``[start, end)`` character span of an example's text."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str
    start: int
    end: int


class TrainingExample(BaseModel):
    """One line of ``train.jsonl``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    text: str
    intent: str
    reason: str | None
    trajectory: list[ToolCall]
    spans: list[Span]
    cohort: str
    template: str
    reply: str | None = None  # the answer to give when the intent calls no tool (greetings, hand-offs)


def load_examples(path: Path) -> list[TrainingExample]:
    """All examples of ``path`` in file order; raises :class:`TrainingDataError`."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TrainingDataError(f"cannot read training data {path}: {exc.strerror}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        at_line = data.count(b"\n", 0, exc.start) + 1
        raise TrainingDataError(
            f"{path}:{at_line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None
    examples = []
    # Lines end at "\n" only: str.splitlines() also splits at U+2028, U+0085 and other characters JSON
    # strings may hold unescaped, cutting a valid example in two.
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            examples.append(TrainingExample.model_validate_json(line))
        except ValidationError as exc:
            raise TrainingDataError(
                f"{path}:{number}: not a training example ({exc.errors()[0]['msg']})"
            ) from exc
    return examples


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of the file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def select_examples(
    examples: Sequence[TrainingExample], cohorts: Sequence[str] | None, max_examples: int | None
) -> list[TrainingExample]:
    """Examples of the given cohorts (all when None), in file order, at most ``max_examples``."""
    chosen = [e for e in examples if cohorts is None or e.cohort in cohorts]
    if max_examples is not None:
        chosen = chosen[:max_examples]
    return chosen


def check_trainable(examples: Sequence[TrainingExample]) -> None:
    """Raise :class:`TrainingDataError` unless ``examples`` can fit every part of the model: at least two
    intents for the intent classifier and, when any example has a ``reason``, at least two distinct reasons
    for the reason classifier (data with no reasons at all, e.g. an agent without a refund-like tool that
    takes a classified argument, trains no reason classifier).

    ``validate`` calls it too, so data the training step would refuse fails before a run starts.
    """
    intents = sorted({e.intent for e in examples})
    if len(intents) < 2:
        raise TrainingDataError(f"training data needs at least two intents, found {intents}")
    reasons = sorted({e.reason for e in examples if e.reason is not None})
    if len(reasons) == 1:
        raise TrainingDataError(
            f"training data has one `reason` ({reasons[0]!r}): the reason classifier needs at least two, "
            "or set `reason` to null on every example"
        )


def token_labels(example: TrainingExample) -> list[str]:
    """Per-token span labels of ``example`` (a token inside a span takes the span's label)."""
    labels = []
    for token in tokenize(example.text):
        label = OUTSIDE
        for span in example.spans:
            if token.start < span.end and token.end > span.start:
                label = span.label
        labels.append(label)
    return labels


def learn_plans(examples: Sequence[TrainingExample]) -> dict[str, tuple[PlanStep, ...]]:
    """Per intent, the most frequent trajectory (ties: the first one seen)."""
    counts: dict[str, Counter[tuple[PlanStep, ...]]] = {}
    for example in examples:
        plan = tuple(PlanStep(call.name, tuple(sorted(call.arguments))) for call in example.trajectory)
        counts.setdefault(example.intent, Counter())[plan] += 1
    return {intent: counter.most_common(1)[0][0] for intent, counter in sorted(counts.items())}


def learn_replies(examples: Sequence[TrainingExample]) -> dict[str, str]:
    """Per intent whose examples call no tool, the most frequent ``reply`` given (ties: the first seen).

    Intents without one keep the demo's built-in answers (a hand-off for ``escalate``, else a greeting).
    """
    counts: dict[str, Counter[str]] = {}
    for example in examples:
        if not example.trajectory and example.reply:
            counts.setdefault(example.intent, Counter())[example.reply] += 1
    return {intent: counter.most_common(1)[0][0] for intent, counter in sorted(counts.items())}


def _text_classifier(seed: int) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    return Pipeline(
        [
            ("tfidf", TfidfVectorizer(preprocessor=intent_text, ngram_range=(1, 2), sublinear_tf=True)),
            ("clf", LogisticRegression(C=10.0, max_iter=2000, random_state=seed)),
        ]
    )


def train_support_model(
    train_path: Path,
    seed: int = 7,
    max_examples: int | None = None,
    cohorts: Sequence[str] | None = None,
) -> TrainedModel:
    """Fit a :class:`TrainedModel` on the selected examples of ``train_path`` (deterministic for ``seed``)."""
    from threadpoolctl import threadpool_limits

    # One BLAS thread: on a small shared machine oversubscribed BLAS threads made fitting ~10x slower, and a
    # fixed thread count keeps floating-point sums, hence coefficients, reproducible.
    with threadpool_limits(limits=1):
        return _train(train_path, seed, max_examples, cohorts)


def _train(
    train_path: Path, seed: int, max_examples: int | None, cohorts: Sequence[str] | None
) -> TrainedModel:
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression

    examples = select_examples(load_examples(train_path), cohorts, max_examples)
    if not examples:
        raise TrainingDataError(f"no training examples in {train_path} for cohorts {cohorts}")
    check_trainable(examples)

    texts = [e.text for e in examples]
    intent_model = _text_classifier(seed).fit(texts, [e.intent for e in examples])

    refund = [e for e in examples if e.reason is not None]
    # An agent whose tools take no classified argument has no reasons to learn: no reason classifier then.
    reason_model = (
        _text_classifier(seed).fit([e.text for e in refund], [e.reason for e in refund]) if refund else None
    )

    rows: list[dict[str, float]] = []
    labels: list[str] = []
    for example in examples:
        tokens = tokenize(example.text)
        rows.extend(token_features(tokens, i) for i in range(len(tokens)))
        labels.extend(token_labels(example))
    vectorizer = DictVectorizer()
    matrix = vectorizer.fit_transform(rows)
    tagger = LogisticRegression(C=5.0, max_iter=2000, random_state=seed).fit(matrix, labels)

    model = TrainedModel(
        intent=intent_model,
        reason=reason_model,
        tagger_features=vectorizer,
        tagger=tagger,
        plans=learn_plans(examples),
        replies=learn_replies(examples),
    )
    accuracy = {"intent": round(float(intent_model.score(texts, [e.intent for e in examples])), 4)}
    if reason_model is not None:
        accuracy["reason"] = round(
            float(reason_model.score([e.text for e in refund], [e.reason for e in refund])), 4
        )
    accuracy["span_tokens"] = round(float(tagger.score(matrix, labels)), 4)
    model.info = {
        "seed": seed,
        "cohorts": sorted({e.cohort for e in examples}),
        "n_examples": len(examples),
        "data_sha256": file_sha256(train_path),
        "training_accuracy": accuracy,
    }
    logger.info(
        "examples=<%d>, cohorts=<%s>, seed=<%d> | trained demo support model",
        len(examples),
        ",".join(model.info["cohorts"]),
        seed,
    )
    return model


def examples_summary(examples: Sequence[TrainingExample]) -> dict[str, int]:
    """Number of examples per cohort (for reports)."""
    return dict(sorted(Counter(e.cohort for e in examples).items()))


def dump_examples(examples: Sequence[TrainingExample]) -> str:
    """JSON lines of ``examples`` (used by tests to write variations of the training file)."""
    return "".join(json.dumps(e.model_dump()) + "\n" for e in examples)
