"""Decoding through a `Seq2SeqAdapter`: greedy and beam search that keep the whole search for display.

Every decoder step run is recorded on the search-tree node it was run from: the top-k candidates, the
attention over the source and the decoder state. A hypothesis is a path from the start node; its output
token t was chosen from the step run at its node t - 1. What-if decoding: `prefix` forces the first output
tokens, `attention` ({step: weights}) replaces the model's attention at those output steps, and `what_if`
swaps a source word (and applies those edits) and decodes both sources side by side. Scores are sums of
log-probabilities; with `length_norm` a > 0, hypotheses rank by score / length ** a (length counting the
end token).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from seqvis.translate.adapter import Encoding, Seq2SeqAdapter

ENDS = ("eos", "pruned", "length", "stopped")


class AdapterError(RuntimeError):
    """The adapter returned something that breaks the protocol (a bug in the adapter, not in the request)."""


class AttentionUnavailable(ValueError):
    """Attention was to be edited, but the model's decoder steps return none."""


@dataclass(eq=False)
class Node:
    """One hypothesis prefix of the search: its last token and score, and what the step run from it saw.

    `end`: why the prefix grew no further: "eos" (finished), "pruned" (none of its continuations stayed in
    the beam), "length" (max_length reached), "stopped" (the search ended: it could no longer beat the
    returned hypotheses); None while it has children in the tree. `rank`: its place among the returned
    hypotheses when one ends here. The step fields stay None until a step is run from the node.
    """

    id: int
    parent: int | None
    depth: int
    token: int
    log_prob: float
    score: float
    end: str | None = None
    rank: int | None = None
    top_ids: np.ndarray | None = None
    top_log_probs: np.ndarray | None = None
    attention: np.ndarray | None = None
    state: np.ndarray | None = None


@dataclass(eq=False)
class Hypothesis:
    """An output sequence with, per output step t, the step it came from (attention, decoder state, top-k)."""

    ids: list[int]
    log_probs: list[float]
    score: float
    normalized: float
    finished: bool
    attention: np.ndarray | None      # [T, S]; None for a model without attention
    states: np.ndarray                # [T, H]
    top_ids: np.ndarray               # [T, k]
    top_log_probs: np.ndarray         # [T, k]
    node: int


@dataclass(eq=False)
class Translation:
    """The result of one decoding: the source, its encoder states, the hypotheses best first, the search tree."""

    source_ids: list[int]
    encoder_states: np.ndarray        # [S, D]
    hypotheses: list[Hypothesis]
    nodes: list[Node]
    has_attention: bool
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> Hypothesis:
        return self.hypotheses[0]


# -- words to ids ---------------------------------------------------------------------------------------------
def _ids(words: Sequence[str], vocab: Sequence[str], what: str, side: str) -> list[int]:
    index = {word: i for i, word in enumerate(vocab) if word}
    unknown = [word for word in words if word not in index]
    if unknown:
        listed = ", ".join(repr(word) for word in dict.fromkeys(unknown))
        raise ValueError(f"{what}: unknown {side} token(s) {listed} (not in the model's {len(index)}-word "
                         f"{side} vocabulary)")
    return [index[word] for word in words]


def source_ids(adapter: Seq2SeqAdapter, text: str, *, max_tokens: int = 100, what: str = "source") -> list[int]:
    """The source ids of `text`; empty, over-long or unknown-word input is refused, naming the problem (and the
    parameter `what`)."""
    words = adapter.tokenize_source(text)
    if not words:
        raise ValueError(f"{what}: is empty")
    if len(words) > max_tokens:
        raise ValueError(f"{what}: has {len(words)} tokens, at most {max_tokens} allowed")
    return _ids(words, adapter.source_vocab, what, "source")


def target_ids(adapter: Seq2SeqAdapter, text: str, what: str = "prefix") -> list[int]:
    """The target ids of `text` (a typed prefix); unknown words are refused, naming them."""
    return _ids(adapter.tokenize_target(text), adapter.target_vocab, what, "target")


# -- one search -----------------------------------------------------------------------------------------------
class _Tree:
    """The state shared by greedy and beam search: checked inputs, the encoding and the growing tree."""

    def __init__(self, adapter: Seq2SeqAdapter, source: Sequence[int], *, max_length: int, top_k: int,
                 prefix: Sequence[int], attention: Mapping[int, Sequence[float]] | None):
        self.adapter = adapter
        self.source = [int(i) for i in source]
        if not self.source:
            raise ValueError("source: is empty")
        bad = [i for i in self.source if not 0 <= i < len(adapter.source_vocab)]
        if bad:
            raise ValueError(f"source: id {bad[0]} is not in the source vocabulary "
                             f"(0..{len(adapter.source_vocab) - 1})")
        if max_length < 1:
            raise ValueError(f"max_length: must be at least 1, got {max_length}")
        if top_k < 1:
            raise ValueError(f"top_k: must be at least 1, got {top_k}")
        self.max_length, self.top_k = max_length, min(top_k, len(adapter.target_vocab))
        self.prefix = self._check_prefix(prefix)
        self.encoding = adapter.encode(torch.tensor(self.source, dtype=torch.long))
        states = self.encoding.states
        if not (isinstance(states, torch.Tensor) and states.ndim == 2 and states.shape[0] == len(self.source)):
            raise AdapterError(f"encode must return states shaped [S={len(self.source)}, D], got "
                               f"{getattr(states, 'shape', type(states).__name__)}")
        self.memory = self.encoding.states if self.encoding.memory is None else self.encoding.memory
        self.overrides = self._check_attention(attention or {})
        self.nodes = [Node(0, None, 0, adapter.bos, 0.0, 0.0)]
        self.has_attention: bool | None = None
        if self.overrides:
            self._require_attention()

    def _check_prefix(self, prefix: Sequence[int]) -> list[int]:
        prefix = [int(i) for i in prefix]
        vocab = len(self.adapter.target_vocab)
        if len(prefix) > self.max_length:
            raise ValueError(f"prefix: has {len(prefix)} tokens, more than max_length {self.max_length}")
        for position, token in enumerate(prefix):
            if not 0 <= token < vocab:
                raise ValueError(f"prefix: id {token} at position {position} is not in the target vocabulary "
                                 f"(0..{vocab - 1})")
            if token == self.adapter.eos and position != len(prefix) - 1:
                raise ValueError(f"prefix: position {position} is the end token; only the last token may end it")
        return prefix

    def _check_attention(self, attention: Mapping[int, Sequence[float]]) -> dict[int, torch.Tensor]:
        """Each edit as a normalised weight row over the source; refuse what cannot be one."""
        length, checked = len(self.source), {}
        for step, weights in attention.items():
            if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 0 <= step < self.max_length:
                raise ValueError(f"attention: step {step!r} is out of range (0..{self.max_length - 1})")
            row = torch.as_tensor(np.asarray(weights, dtype=np.float64)).flatten()
            if row.numel() != length:
                raise ValueError(f"attention: step {step} has {row.numel()} weights, the source has {length} tokens")
            if not torch.isfinite(row).all():
                raise ValueError(f"attention: step {step} has a weight that is not a finite number")
            if (row < 0).any():
                raise ValueError(f"attention: step {step} has a negative weight")
            if row.sum() <= 0:
                raise ValueError(f"attention: step {step} sums to 0 and cannot be normalised")
            if not torch.isfinite(row.sum()):
                raise ValueError(f"attention: step {step} has weights too large to normalise")
            checked[int(step)] = (row / row.sum()).to(self.encoding.states.dtype)
        return checked

    def _require_attention(self) -> None:
        """Run the first step once unchanged to learn whether the model attends at all."""
        self._step(self.encoding.state, torch.tensor([self.adapter.bos]), None)
        if not self.has_attention:
            raise AttentionUnavailable("attention: this model's decoder steps return no attention, so attention "
                                       "cannot be edited")

    def _step(self, state: Any, previous: torch.Tensor, attention: torch.Tensor | None
              ) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
        log_probs, weights, new_state = (self.adapter.step(self.memory, state, previous) if attention is None else
                                         self.adapter.step(self.memory, state, previous, attention=attention))
        b, vocab, length = len(previous), len(self.adapter.target_vocab), len(self.source)
        if not (isinstance(log_probs, torch.Tensor) and tuple(log_probs.shape) == (b, vocab)):
            raise AdapterError(f"step must return log-probabilities shaped [B={b}, V={vocab}], got "
                               f"{getattr(log_probs, 'shape', type(log_probs).__name__)}")
        total = torch.logsumexp(log_probs.double(), dim=-1)
        if not torch.allclose(total, torch.zeros_like(total), atol=1e-3):
            raise AdapterError(f"step must return log-probabilities (log_softmax); exp sums to "
                               f"{total.exp().tolist()}")
        if weights is not None and tuple(weights.shape) != (b, length):
            raise AdapterError(f"step must return attention shaped [B={b}, S={length}] or None, got "
                               f"{tuple(weights.shape)}")
        self.has_attention = weights is not None
        return log_probs, weights, new_state

    def expand(self, nodes: list[Node], state: Any) -> tuple[torch.Tensor, Any]:
        """Run one decoder step from `nodes` (one depth, in the order of the state's rows) and record it."""
        depth = nodes[0].depth
        override = self.overrides.get(depth)
        previous = torch.tensor([node.token for node in nodes], dtype=torch.long)
        log_probs, weights, state = self._step(
            state, previous, None if override is None else override.expand(len(nodes), -1))
        top = torch.topk(log_probs, self.top_k, dim=-1)
        shown = self.adapter.decoder_states(state).detach().float().cpu().numpy()
        weights = None if weights is None else weights.detach().float().cpu().numpy()
        top_ids, top_log_probs = top.indices.cpu().numpy(), top.values.detach().float().cpu().numpy()
        for row, node in enumerate(nodes):
            node.top_ids, node.top_log_probs, node.state = top_ids[row], top_log_probs[row], shown[row]
            node.attention = None if weights is None else weights[row]
        return log_probs.detach().double(), state

    def forced(self, depth: int) -> int | None:
        return self.prefix[depth] if depth < len(self.prefix) else None

    def child(self, parent: Node, token: int, log_prob: float) -> Node:
        node = Node(len(self.nodes), parent.id, parent.depth + 1, token, log_prob, parent.score + log_prob)
        if token == self.adapter.eos:
            node.end = "eos"
        self.nodes.append(node)
        return node

    def hypothesis(self, last: Node, length_norm: float) -> Hypothesis:
        path = []
        node = last
        while node.parent is not None:
            path.append(node)
            node = self.nodes[node.parent]
        path.reverse()
        steps = [self.nodes[node.parent] for node in path]  # the node each output token's step was run from
        return Hypothesis(
            ids=[node.token for node in path], log_probs=[node.log_prob for node in path], score=last.score,
            normalized=normalized(last, length_norm), finished=last.end == "eos",
            attention=np.stack([s.attention for s in steps]) if self.has_attention and steps else None,
            states=_stack([s.state for s in steps]), top_ids=_stack([s.top_ids for s in steps], np.int64),
            top_log_probs=_stack([s.top_log_probs for s in steps]), node=last.id)

    def result(self, ranked: list[Node], length_norm: float, settings: dict[str, Any]) -> Translation:
        has_children = {node.parent for node in self.nodes}
        for node in self.nodes:
            if node.end is None and node.id not in has_children:
                node.end = "pruned"
        for rank, node in enumerate(ranked):
            node.rank = rank
        return Translation(
            source_ids=self.source, encoder_states=self.encoding.states.detach().float().cpu().numpy(),
            hypotheses=[self.hypothesis(node, length_norm) for node in ranked], nodes=self.nodes,
            has_attention=bool(self.has_attention), settings=settings)


def _stack(rows: list[np.ndarray], dtype=np.float32) -> np.ndarray:
    return np.stack(rows) if rows else np.zeros((0, 0), dtype)


def normalized(node: Node, length_norm: float) -> float:
    """The score a hypothesis ending at `node` ranks by: score / length ** length_norm."""
    return node.score / node.depth ** length_norm if length_norm and node.depth else node.score


# -- the searches -----------------------------------------------------------------------------------------------
@torch.no_grad()
def greedy(adapter: Seq2SeqAdapter, source: Sequence[int], *, max_length: int = 50, top_k: int = 5,
           prefix: Sequence[int] = (), attention: Mapping[int, Sequence[float]] | None = None) -> Translation:
    """The most likely token at every step (after the forced `prefix`), until the end token or `max_length`."""
    tree = _Tree(adapter, source, max_length=max_length, top_k=top_k, prefix=prefix, attention=attention)
    node, state = tree.nodes[0], tree.encoding.state
    while node.end is None:
        if node.depth == max_length:
            node.end = "length"
            break
        log_probs, state = tree.expand([node], state)
        forced = tree.forced(node.depth)
        token = int(log_probs[0].argmax()) if forced is None else forced
        node = tree.child(node, token, float(log_probs[0, token]))
    settings = dict(search="greedy", max_length=max_length, top_k=tree.top_k, prefix=tree.prefix,
                    attention={step: row.tolist() for step, row in tree.overrides.items()})
    return tree.result([node], 0.0, settings)


@torch.no_grad()
def beam_search(adapter: Seq2SeqAdapter, source: Sequence[int], *, width: int = 5, n_best: int = 1,
                max_length: int = 50, length_norm: float = 0.0, top_k: int = 5, prefix: Sequence[int] = (),
                attention: Mapping[int, Sequence[float]] | None = None) -> Translation:
    """Beam search keeping `width` unfinished hypotheses per step; returns the `n_best` best, best first.

    Each step ranks every continuation of every beam hypothesis; continuations ending in the end token that
    rank above the last one kept finish, the first `width` others form the next beam. The search stops when
    no kept hypothesis can still beat the `n_best` finished ones (exact: scores only fall, and a normalised
    score is bounded by score / max_length ** length_norm), or at `max_length`; unfinished hypotheses fill
    the n-best only when too few finished.
    """
    if width < 1:
        raise ValueError(f"width: must be at least 1, got {width}")
    if not 1 <= n_best <= width:
        raise ValueError(f"n_best: must be between 1 and the beam width {width}, got {n_best}")
    if length_norm < 0:
        raise ValueError(f"length_norm: must not be negative, got {length_norm}")
    tree = _Tree(adapter, source, max_length=max_length, top_k=top_k, prefix=prefix, attention=attention)
    eos = adapter.eos
    live, state, finished = [tree.nodes[0]], tree.encoding.state, []
    while live:
        depth = live[0].depth
        if depth == max_length:
            for node in live:
                node.end = "length"
            break
        if len(finished) >= n_best:
            worst = sorted((normalized(n, length_norm) for n in finished), reverse=True)[n_best - 1]
            bound = max(n.score for n in live) / (max_length ** length_norm if length_norm else 1)
            if bound <= worst:
                for node in live:
                    node.end = "stopped"
                break
        log_probs, state = tree.expand(live, state)
        forced = tree.forced(depth)
        if forced is not None:
            order = sorted(range(len(live)), key=lambda row: -(live[row].score + float(log_probs[row, forced])))
            candidates = [(row, forced) for row in order]
        else:
            scores = torch.tensor([n.score for n in live], dtype=torch.float64)[:, None] + log_probs
            vocab = scores.shape[1]
            # At most one end token per hypothesis ranks before the `width`-th kept one.
            flat = torch.topk(scores.flatten(), min(width + len(live), scores.numel()))
            candidates = ((index // vocab, index % vocab) for index in flat.indices.tolist())
        kept: list[tuple[int, Node]] = []
        for row, token in candidates:
            node = tree.child(live[row], token, float(log_probs[row, token]))
            if token == eos:
                finished.append(node)
            else:
                kept.append((row, node))
                if len(kept) == width:
                    break
        live = [node for _, node in kept]
        if live:
            state = adapter.select(state, torch.tensor([row for row, _ in kept], dtype=torch.long))
    ends = sorted(finished, key=lambda n: -normalized(n, length_norm))
    cut = sorted((n for n in tree.nodes if n.end in ("length", "stopped")), key=lambda n: -normalized(n, length_norm))
    settings = dict(search="beam", width=width, n_best=n_best, max_length=max_length, length_norm=length_norm,
                    top_k=tree.top_k, prefix=tree.prefix,
                    attention={step: row.tolist() for step, row in tree.overrides.items()})
    return tree.result((ends + cut)[:n_best], length_norm, settings)


def search(adapter: Seq2SeqAdapter, source: Sequence[int], *, beam: int = 5, n_best: int = 1, length_norm: float = 0.0,
           **options: Any) -> Translation:
    """Greedy search for `beam` 1, beam search of that width otherwise; `options` as both take them."""
    if beam == 1:
        if n_best != 1:
            raise ValueError(f"n_best: must be 1 with beam 1, got {n_best}")
        return greedy(adapter, source, **options)
    return beam_search(adapter, source, width=beam, n_best=n_best, length_norm=length_norm, **options)


def what_if(adapter: Seq2SeqAdapter, source: Sequence[int], *, swap: tuple[int, int] | None = None,
            prefix: Sequence[int] = (), attention: Mapping[int, Sequence[float]] | None = None,
            **options: Any) -> tuple[Translation, Translation]:
    """The translation of `source` and, side by side, the edited one: the source word at position `swap[0]`
    replaced by id `swap[1]`, the output forced to begin with `prefix`, attention replaced at the steps of
    `attention`. Both are decoded by `search` with `options`."""
    edited = list(source)
    if swap is not None:
        position, word = swap
        if not 0 <= position < len(edited):
            raise ValueError(f"swap: position {position} is not a source position (0..{len(edited) - 1})")
        if not 0 <= word < len(adapter.source_vocab):
            raise ValueError(f"swap: id {word} is not in the source vocabulary (0..{len(adapter.source_vocab) - 1})")
        edited[position] = word
    changed = search(adapter, edited, prefix=prefix, attention=attention, **options)
    return search(adapter, source, **options), changed


@torch.no_grad()
def embedding_neighbours(adapter: Seq2SeqAdapter, word: int, k: int = 10) -> list[tuple[int, float]]:
    """The `k` source words whose embeddings are nearest (cosine) to that of id `word`, most similar first;
    the word itself, special tokens and unused ids are left out."""
    matrix = adapter.source_embeddings()
    if matrix is None:
        raise ValueError("word: this model exposes no source embeddings (Seq2SeqAdapter.source_embeddings), so "
                         "no substitutes can be offered")
    vocab = adapter.source_vocab
    if matrix.ndim != 2 or matrix.shape[0] != len(vocab):
        raise AdapterError(f"source_embeddings must be shaped [{len(vocab)}, E], got {tuple(matrix.shape)}")
    if not 0 <= word < len(vocab):
        raise ValueError(f"word: id {word} is not in the source vocabulary (0..{len(vocab) - 1})")
    unit = torch.nn.functional.normalize(matrix.detach().float(), dim=1)
    similarity = unit @ unit[word]
    excluded = [i for i, w in enumerate(vocab) if not w or w in adapter.special_source_tokens] + [word]
    similarity[excluded] = -torch.inf
    count = min(k, len(vocab) - len(set(excluded)))
    top = torch.topk(similarity, count)
    return list(zip(top.indices.tolist(), top.values.tolist()))
