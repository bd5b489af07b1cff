"""The trained support model: what it learned and how it turns a user message into an action.

A :class:`TrainedModel` holds four learned parts, all fitted by :mod:`.training` from ``train.jsonl``:

- ``intent``: TF-IDF + logistic regression, user text -> intent;
- ``reason``: TF-IDF + logistic regression, refund text -> refund reason (None when the training data has
  no ``reason``: the model then never fills a ``reason`` argument);
- ``tagger``: a per-token logistic regression over context-window features, tagging argument spans
  (``order_id``, ``query``);
- ``plans``: per intent, the most frequent tool trajectory in the training data (tool names and the argument
  names each tool was called with);
- ``replies``: per intent that calls no tool, the most frequent ``reply`` of its examples (none in the
  demo's data, whose tool-less intents get the built-in hand-off or greeting).

``predict(text)`` returns a :class:`Prediction`; :mod:`.chat` wraps it in the chat-completions protocol.
Save with ``save(path)`` and load with :func:`load_trained_model` (joblib files).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent_release.agents.demo_model.features import Token, token_features, tokenize

OUTSIDE = "O"
_DIGITS = re.compile(r"\d+")
# Caches scikit-learn keeps on fitted estimators whose values only mean something in the process that set
# them: TfidfVectorizer stores ``id(self.stop_words)`` (a memory address) once it has checked its stop
# words, so the same model pickled in two processes gave two different files. Dropped on save; scikit-learn
# sets them again on first use.
_PROCESS_LOCAL_ATTRIBUTES = ("_stop_words_id",)


@dataclass(frozen=True)
class PlanStep:
    """One planned tool call: the tool and the argument names it takes."""

    tool: str
    arguments: tuple[str, ...]


@dataclass(frozen=True)
class Prediction:
    """What the model makes of one user message."""

    intent: str
    confidence: float
    plan: tuple[PlanStep, ...]
    arguments: dict[str, str]


@dataclass
class TrainedModel:
    """Fitted estimators plus the learned plans; ``info`` records how it was trained."""

    intent: Any
    reason: Any
    tagger_features: Any
    tagger: Any
    plans: dict[str, tuple[PlanStep, ...]]
    info: dict[str, Any] = field(default_factory=dict)
    replies: dict[str, str] = field(default_factory=dict)

    def reply_for(self, intent: str) -> str | None:
        """The learned answer of a tool-less ``intent``, or None (a model saved before replies were learned
        has no ``replies`` attribute)."""
        return getattr(self, "replies", {}).get(intent)

    def predict(self, text: str) -> Prediction:
        """Intent, plan and extracted argument values for the user message ``text``."""
        probabilities = self.intent.predict_proba([text])[0]
        best = int(probabilities.argmax())
        intent = str(self.intent.classes_[best])
        plan = self.plans.get(intent, ())
        needed = {name for step in plan for name in step.arguments}
        arguments = self.extract_spans(text)
        if "reason" in needed and self.reason is not None:
            arguments["reason"] = str(self.reason.predict([text])[0])
        if "order_id" in arguments:
            canonical = canonical_order_id(arguments["order_id"])
            if canonical is None:
                del arguments["order_id"]
            else:
                arguments["order_id"] = canonical
        return Prediction(intent, float(probabilities[best]), plan, arguments)

    def tag(self, text: str) -> list[tuple[Token, str]]:
        """Each token of ``text`` with its predicted span label (``O`` outside any argument)."""
        tokens = tokenize(text)
        if not tokens:
            return []
        matrix = self.tagger_features.transform([token_features(tokens, i) for i in range(len(tokens))])
        return list(zip(tokens, (str(label) for label in self.tagger.predict(matrix)), strict=True))

    def extract_spans(self, text: str) -> dict[str, str]:
        """Argument name -> source text of the longest run of tokens tagged with that name."""
        runs: dict[str, tuple[int, int]] = {}
        current: tuple[str, int, int] | None = None
        for token, label in [*self.tag(text), (Token("", len(text), len(text)), OUTSIDE)]:
            if current and label == current[0]:
                current = (label, current[1], token.end)
                continue
            if current:
                name, start, end = current
                if name not in runs or end - start > runs[name][1] - runs[name][0]:
                    runs[name] = (start, end)
            current = (label, token.start, token.end) if label != OUTSIDE else None
        return {name: text[start:end] for name, (start, end) in runs.items()}

    def save(self, path: Path) -> Path:
        """Write the model to ``path`` with joblib (parent directories are created)."""
        import joblib

        path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_process_local_state()
        joblib.dump(self, path)
        return path

    def _drop_process_local_state(self) -> None:
        """Remove the caches of :data:`_PROCESS_LOCAL_ATTRIBUTES`, so the file depends on data and seed only."""
        for estimator in (self.intent, self.reason, self.tagger_features, self.tagger):
            if estimator is None:
                continue
            for part in [estimator, *(step for _, step in getattr(estimator, "steps", ()))]:
                for name in _PROCESS_LOCAL_ATTRIBUTES:
                    vars(part).pop(name, None)


def canonical_order_id(span: str) -> str | None:
    """The tools' id format for a tagged span (``#10427`` -> ``ORD-10427``); None without digits."""
    digits = _DIGITS.findall(span)
    return f"ORD-{digits[0]}" if digits else None


def load_trained_model(path: Path) -> TrainedModel:
    """Load a model written by :meth:`TrainedModel.save`; raises ``ValueError`` for other files."""
    import joblib

    try:
        model = joblib.load(path)
    except Exception as exc:  # unpickling garbage raises almost any type; the caller needs one clear error
        raise ValueError(f"cannot load demo model from {path}: {type(exc).__name__}") from exc
    if not isinstance(model, TrainedModel):
        raise ValueError(f"{path} does not hold a demo support model")
    return model
