"""The translate service of one seq2seq project: its adapter loaded once, and JSON-ready answers.

The project's seqvis.yml names a factory ("package.module:function") that is called with the opened
`Seq2SeqProject` and returns a `Seq2SeqAdapter`; the service never looks inside the model.
"""
from __future__ import annotations

import pkgutil
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from seqvis.projects import ProjectError, Seq2SeqProject
from seqvis.translate.adapter import Seq2SeqAdapter
from seqvis.translate.decode import (Node, Translation, embedding_neighbours, greedy, search, source_ids, target_ids,
                                     what_if)

MAX_SOURCE_TOKENS = 100
DIGITS = 4


def load_adapter(project: Seq2SeqProject) -> Seq2SeqAdapter:
    """The adapter that the project's factory builds; a factory that cannot be found or returns something else
    is a ProjectError naming it."""
    spec = project.model.factory
    try:
        factory = pkgutil.resolve_name(spec)
    except (ImportError, AttributeError, ValueError) as error:
        raise ProjectError(f"seqvis.yml model.factory {spec!r} cannot be loaded: {error}") from None
    adapter = factory(project)
    if not isinstance(adapter, Seq2SeqAdapter):
        raise ProjectError(f"seqvis.yml model.factory {spec!r} returned a {type(adapter).__name__}, "
                           f"not a seqvis.translate.Seq2SeqAdapter")
    for name in ("bos", "eos"):
        token = getattr(adapter, name, None)
        if not isinstance(token, int) or not 0 <= token < len(adapter.target_vocab):
            raise ProjectError(f"seqvis.yml model.factory {spec!r}: adapter.{name} must be a target id, got {token!r}")
    return adapter


def _round(values) -> Any:
    """Numbers rounded for JSON; infinities (a token the model rules out) become None, which JSON can hold."""
    if values is None:
        return None
    array = np.round(np.asarray(values, dtype=np.float64), DIGITS)
    finite = np.isfinite(array)
    if array.ndim == 0:
        return float(array) if finite else None
    if finite.all():
        return array.tolist()
    out = array.astype(object)
    out[~finite] = None
    return out.tolist()


class Translator:
    """Translations and what-ifs for one seq2seq project; plain data in, JSON-ready dicts out."""

    kind = "seq2seq"

    def __init__(self, project: Seq2SeqProject, cache_dir: Path):
        self.project, self.cache_dir = project, Path(cache_dir)
        self.adapter = load_adapter(project)

    @cached_property
    def has_attention(self) -> bool:
        """Whether the decoder steps return attention, learnt from one step on a one-word source."""
        word = next((i for i, w in enumerate(self.adapter.source_vocab) if w and w not in
                     self.adapter.special_source_tokens), 0)
        return greedy(self.adapter, [word], max_length=1).has_attention

    def info(self) -> dict:
        """What the page needs before the first request: vocabulary sizes, attention, limits, examples."""
        return {"project": self.project.name, "description": self.project.description,
                "source_words": len(self.adapter.source_vocab), "target_words": len(self.adapter.target_vocab),
                "has_attention": self.has_attention, "embeddings": self.adapter.source_embeddings() is not None,
                "max_source_tokens": MAX_SOURCE_TOKENS, "examples": list(self.project.extra.get("examples", []))}

    # -- decoding ----------------------------------------------------------------------------------------------
    def translate(self, source: str, **options: Any) -> dict:
        """The translation of `source` with every stage of the decoding (see `as_json`)."""
        return self.as_json(search(self.adapter, self.source_ids(source), **options))

    def whatif(self, source: str, *, prefix: str | None = None, attention: Mapping[int, Sequence[float]] | None = None,
               swap: tuple[int, str] | None = None, **options: Any) -> dict:
        """The translation of `source` and, side by side, the one edited by a forced `prefix` (target words),
        attention edits ({output step: weights over the source}) and a source word swap ((position, word))."""
        ids = self.source_ids(source)
        swapped = None if swap is None else (swap[0], self.word_id(swap[1], "swap"))
        forced = target_ids(self.adapter, prefix) if prefix else []
        original, edited = what_if(self.adapter, ids, swap=swapped, prefix=forced, attention=attention, **options)
        return {"original": self.as_json(original), "edited": self.as_json(edited),
                "edits": {"prefix": self.words(forced, self.adapter.target_vocab),
                          "attention": {str(step): weights for step, weights in edited.settings["attention"].items()},
                          "swap": None if swap is None else {"position": swap[0], "from": self.adapter.source_vocab[
                              ids[swap[0]]], "to": swap[1]}}}

    def substitutes(self, source: str, position: int, k: int = 10) -> dict:
        """The source words nearest (cosine of embeddings) to the word at `position` of `source`."""
        ids = self.source_ids(source)
        if not 0 <= position < len(ids):
            raise ValueError(f"position: {position} is not a source position (0..{len(ids) - 1})")
        vocab = self.adapter.source_vocab
        return {"position": position, "word": vocab[ids[position]],
                "neighbours": [{"word": vocab[i], "similarity": round(similarity, DIGITS)}
                               for i, similarity in embedding_neighbours(self.adapter, ids[position], k)]}

    # -- words and ids ---------------------------------------------------------------------------------------------
    def source_ids(self, source: str) -> list[int]:
        return source_ids(self.adapter, source, max_tokens=MAX_SOURCE_TOKENS)

    def word_id(self, word: str, what: str) -> int:
        return source_ids(self.adapter, word, max_tokens=1, what=what)[0]

    @staticmethod
    def words(ids: Sequence[int], vocab: Sequence[str]) -> list[str]:
        return [vocab[i] for i in ids]

    def as_json(self, translation: Translation) -> dict:
        """Encoder tokens and states; per hypothesis its words, scores, and per output step the attention, decoder
        state and top-k; the search tree (every node with its top-k, pruned branches included)."""
        source_vocab, target_vocab = self.adapter.source_vocab, self.adapter.target_vocab
        eos = self.adapter.eos
        hypotheses = []
        for hypothesis in translation.hypotheses:
            words = self.words(hypothesis.ids, target_vocab)
            hypotheses.append({
                "tokens": words, "ids": hypothesis.ids,
                "text": self.adapter.detokenize_target(words[:-1] if hypothesis.ids[-1:] == [eos] else words),
                "score": _round(hypothesis.score), "normalized": _round(hypothesis.normalized),
                "finished": hypothesis.finished, "log_probs": _round(hypothesis.log_probs),
                "attention": _round(hypothesis.attention), "states": _round(hypothesis.states),
                "top": [self._top(ids, log_probs) for ids, log_probs in
                        zip(hypothesis.top_ids, hypothesis.top_log_probs)],
                "node": hypothesis.node})
        return {
            "source": {"tokens": self.words(translation.source_ids, source_vocab), "ids": translation.source_ids,
                       "states": _round(translation.encoder_states)},
            "has_attention": translation.has_attention,
            "hypotheses": hypotheses,
            "tree": [self._node(node) for node in translation.nodes],
            "settings": {key: value for key, value in translation.settings.items() if key != "attention"},
        }

    def _top(self, ids: np.ndarray, log_probs: np.ndarray) -> dict:
        return {"tokens": self.words(ids.tolist(), self.adapter.target_vocab), "ids": ids.tolist(),
                "log_probs": _round(log_probs)}

    def _node(self, node: Node) -> dict:
        return {"id": node.id, "parent": node.parent, "depth": node.depth,
                "token": self.adapter.target_vocab[node.token], "log_prob": _round(node.log_prob),
                "score": _round(node.score), "end": node.end, "rank": node.rank,
                "top": None if node.top_ids is None else self._top(node.top_ids, node.top_log_probs)}
