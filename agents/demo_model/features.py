"""Tokenisation and feature extraction shared by training and inference.

- :func:`tokenize` splits text into tokens with character offsets (ids such as ``ORD-10427`` stay whole).
- :func:`token_features` describes one token by itself and its neighbours (a +-2 window) for the span tagger.
- :func:`intent_text` is the preprocessor of the sentence classifiers: lower-case, digits masked, so the
  classifiers learn "an order-id-shaped thing is here" instead of memorising particular numbers.
- :func:`count_tokens` is the whitespace/punctuation count reported as ``usage``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"[A-Za-z]+-\d+|\w+(?:'\w+)?|[^\w\s]")
_COUNT = re.compile(r"\w+|[^\w\s]")
_WINDOW = 2


@dataclass(frozen=True)
class Token:
    """A token and its ``[start, end)`` character offsets in the source text."""

    text: str
    start: int
    end: int


def tokenize(text: str) -> list[Token]:
    """Tokens of ``text`` in order, with offsets."""
    return [Token(m.group(0), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def count_tokens(text: str) -> int:
    """Number of word and punctuation tokens in ``text`` (the demo model's notion of a token)."""
    return len(_COUNT.findall(text))


def shape(token: str) -> str:
    """Character classes with runs collapsed: ``ORD-10427`` -> ``A-d``, ``#10427`` -> ``#``+``d``."""
    classes: list[str] = []
    for ch in token:
        if ch.isupper():
            c = "A"
        elif ch.islower():
            c = "a"
        elif ch.isdigit():
            c = "d"
        else:
            c = ch
        if not classes or classes[-1] != c:
            classes.append(c)
    return "".join(classes)


def _describe(token: str) -> dict[str, str]:
    low = token.lower()
    return {
        "w": re.sub(r"\d", "0", low),
        "shape": shape(token),
        "pre3": low[:3],
        "suf3": low[-3:],
        "ndigits": str(min(sum(ch.isdigit() for ch in token), 6)),
    }


def token_features(tokens: list[Token], i: int) -> dict[str, float]:
    """Sparse features of token ``i``: its own description and that of its +-2 neighbours."""
    feats: dict[str, float] = {"bias": 1.0}
    for offset in range(-_WINDOW, _WINDOW + 1):
        j = i + offset
        if j < 0:
            feats[f"{offset}:BOS"] = 1.0
            continue
        if j >= len(tokens):
            feats[f"{offset}:EOS"] = 1.0
            continue
        described = _describe(tokens[j].text)
        keys = described if offset == 0 else {"w": described["w"], "shape": described["shape"]}
        for name, value in keys.items():
            feats[f"{offset}:{name}={value}"] = 1.0
    feats[f"pos={min(i, 5)}"] = 1.0
    feats[f"rpos={min(len(tokens) - 1 - i, 5)}"] = 1.0
    return feats


def intent_text(text: str) -> str:
    """Sentence-classifier preprocessing: lower-case with every digit replaced by ``0``."""
    return re.sub(r"\d", "0", text.lower())
