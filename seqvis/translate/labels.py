"""Unit labels of a seq2seq model: which token concept each encoder or decoder unit follows over the training set.

A row of the stored training states is a token: an encoder row the source word it reads, a decoder row the
target word it predicts. Its concepts are what a conversion task turns on, found from the words themselves:
word class (digits, punctuation, month name, weekday name: the names in English, French, German and
Spanish, from babel's CLDR data), the frequent words one by one, and the position in the sentence (0..5,
last). Units are scored by `core.align.search_thresholds` (IoU at the best threshold, AP, both
directions, a rolled-concept baseline), once per side, cached beside the neighbour indexes.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from babel import Locale

from core.align import Progress, ThresholdSearch, search_thresholds

LOCALES = ("en", "fr", "de", "es")
FREQUENT = 0.01          # words covering at least this share of a side's tokens are concepts of their own
POSITIONS = 6


def _names(kind: str) -> set[str]:
    """Month or weekday names (wide and abbreviated) in LOCALES, lower case."""
    names = set()
    for code in LOCALES:
        table = getattr(Locale.parse(code), kind)["format"]
        for width in ("wide", "abbreviated"):
            names.update(name.lower().rstrip(".") for name in table[width].values())
    return names


def token_concepts(words: list[str], positions: np.ndarray, lengths: np.ndarray
                   ) -> tuple[list[str], list[str], list[int], np.ndarray]:
    """Concept names, categories, each concept's category and the masks [tokens, concepts] of tokens whose words
    are `words`, at `positions` of sentences `lengths` long."""
    months, weekdays = _names("months"), _names("days")
    lower = np.array([word.lower().rstrip(".") for word in words], dtype=object)
    classes = {
        "digits": np.array([word.isdigit() for word in words]),
        "punctuation": np.array([bool(word) and not any(char.isalnum() for char in word) for word in words]),
        "month name": np.isin(lower, list(months)),
        "weekday name": np.isin(lower, list(weekdays)),
    }
    vocabulary, counts = np.unique(np.array(words, dtype=object), return_counts=True)
    frequent = [str(word) for word, count in zip(vocabulary, counts) if count >= FREQUENT * len(words)]
    word_array = np.array(words, dtype=object)
    places = {**{f"={k}": positions == k for k in range(POSITIONS)}, "last": positions == lengths - 1}
    table = ([("word class", name, mask) for name, mask in classes.items()]
             + [("word", f"'{word}'", word_array == word) for word in frequent]
             + [("position", f"position {name}", mask) for name, mask in places.items()])
    table = [(category, name, mask) for category, name, mask in table if mask.any()]
    categories = list(dict.fromkeys(category for category, _, _ in table))
    return ([name for _, name, _ in table], categories, [categories.index(category) for category, _, _ in table],
            np.stack([mask for _, _, mask in table], axis=1))


def side_labels(training, side: str, source_vocab, target_vocab, cache_dir: Path,
                progress: Progress | None = None) -> ThresholdSearch:
    """The threshold search of one side's units against its token concepts, from `cache_dir` when the states
    file is unchanged (`training` is a `seqvis.translate.service.TrainingStates`)."""
    stat = training.path.stat()
    key = json.dumps([str(training.path.resolve()), stat.st_size, stat.st_mtime_ns, side, FREQUENT, POSITIONS])
    path = Path(cache_dir) / f"labels.{side}.{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    if path.is_file():
        return ThresholdSearch.load(path)
    words, positions, lengths = training.token_words(side, source_vocab if side == "encoder" else target_vocab)
    names, categories, concept_category, masks = token_concepts(words, positions, lengths)
    found = search_thresholds(training.file[f"{side}/states"], masks, names, categories, concept_category,
                              progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    found.save(path)
    return found
