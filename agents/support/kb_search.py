"""TF-IDF retrieval over the knowledge base (scikit-learn does the weighting and the scoring).

Build one :class:`KbIndex` per data directory and call ``search(query, k)``; ties break by article order,
so results are deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from agent_release.agents.support.data import KbArticle

SNIPPET_CHARS = 160


class KbHit(BaseModel):
    """One search result."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    article_id: str
    title: str
    snippet: str
    score: float


class KbIndex:
    """A TF-IDF index of article titles (weighted twice) and bodies."""

    def __init__(self, articles: Sequence[KbArticle]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self._articles = tuple(articles)
        self._vectorizer = TfidfVectorizer(stop_words="english", sublinear_tf=True, ngram_range=(1, 2))
        documents = [f"{a.title} {a.title} {a.body}" for a in self._articles]
        self._matrix: Any = self._vectorizer.fit_transform(documents)

    def search(self, query: str, k: int = 3) -> list[KbHit]:
        """The ``k`` best articles for ``query`` with a positive score, best first."""
        scores = (self._matrix @ self._vectorizer.transform([query]).T).toarray().ravel()
        order = sorted(range(len(self._articles)), key=lambda i: (-float(scores[i]), i))
        hits = []
        for i in order[:k]:
            if scores[i] <= 0:
                break
            article = self._articles[i]
            hits.append(
                KbHit(
                    article_id=article.id,
                    title=article.title,
                    snippet=_snippet(article.body),
                    score=round(float(scores[i]), 4),
                )
            )
        return hits


def _snippet(body: str) -> str:
    if len(body) <= SNIPPET_CHARS:
        return body
    cut = body[:SNIPPET_CHARS].rsplit(" ", 1)[0]
    return cut + "..."
