"""The adapter protocol: what seqvis needs from an encoder-decoder to decode with it and show its insides.

seqvis runs the decoding itself (`seqvis.translate.decode`), one decoder step at a time, so any PyTorch
encoder-decoder works once it is wrapped in a `Seq2SeqAdapter`. A project's seqvis.yml names a factory
("package.module:function") that is called with the opened `Seq2SeqProject` and returns the adapter; see
`seqvis.demo.translate:load_adapter`, which serves the demo and any model of its architecture.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch


class Encoding(NamedTuple):
    """What `Seq2SeqAdapter.encode` returns for one source sentence.

    `states` [S, D]: one encoder state per source position (shown, and searched for neighbours).
    `state`: the decoder's initial state for a batch of one hypothesis.
    `memory`: what `step` reads besides the state (the attention keys and values); `states` when None.
    """

    states: torch.Tensor
    state: Any
    memory: Any = None


class Seq2SeqAdapter(ABC):
    """An encoder-decoder as seqvis drives it: tokenise, encode a source, take one decoder step at a time.

    A model with global attention, wrapped in about a dozen lines::

        class MyAdapter(Seq2SeqAdapter):
            def __init__(self, model, source_vocab, target_vocab):
                self.model, self.source_vocab, self.target_vocab = model.eval(), source_vocab, target_vocab
                self.bos, self.eos = target_vocab.index("<s>"), target_vocab.index("</s>")

            def encode(self, source):                      # source: LongTensor [S]
                states, (h, c) = self.model.encoder(self.model.source_embed(source)[None])
                return Encoding(states=states[0], state=(h[-1], c[-1]))

            def step(self, memory, state, previous, attention=None):
                h, c = self.model.cell(self.model.target_embed(previous), state)      # [B, H]
                if attention is None:
                    attention = torch.softmax(h @ memory.T, dim=-1)                   # [B, S]
                logits = self.model.out(torch.cat([h, attention @ memory], dim=-1))
                return logits.log_softmax(-1), attention, (h, c)

            def source_embeddings(self):
                return self.model.source_embed.weight

    Batches: `step` gets B hypotheses of one source sentence at once; `memory` is the `Encoding`'s, shared by
    all of them. States are tensors, or tuples, lists or dicts of tensors, with the hypotheses along dim 0
    (override `select` otherwise). A model without attention returns None as attention and ignores the
    `attention` argument (seqvis never passes one to it). seqvis calls the adapter under `torch.no_grad()`.
    """

    source_vocab: Sequence[str]
    """Source words by id."""
    target_vocab: Sequence[str]
    """Target words by id."""
    bos: int
    """Target id fed as the previous token of the first step."""
    eos: int
    """Target id that ends a hypothesis."""
    special_source_tokens: frozenset[str] = frozenset()
    """Source words never offered as substitutes (padding, unknown-word markers)."""

    @abstractmethod
    def encode(self, source: torch.Tensor) -> Encoding:
        """Run the encoder over source ids [S] (int64)."""

    @abstractmethod
    def step(self, memory: Any, state: Any, previous: torch.Tensor, attention: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
        """One decoder step for B hypotheses: previous target ids [B] -> (log-probabilities [B, V] over the
        target vocabulary, attention [B, S] over source positions or None, the new state).

        Given `attention` [B, S] (non-negative rows summing to 1), use it instead of the model's own and
        recompute the context from it: this is how seqvis edits attention."""

    def tokenize_source(self, text: str) -> list[str]:
        """Source words of `text` (default: split at whitespace)."""
        return text.split()

    def tokenize_target(self, text: str) -> list[str]:
        """Target words of `text`, as a forced prefix is typed (default: split at whitespace)."""
        return text.split()

    def detokenize_target(self, words: Sequence[str]) -> str:
        """The text of target words (default: joined by spaces)."""
        return " ".join(words)

    def select(self, state: Any, index: torch.Tensor) -> Any:
        """The hypotheses `index` [B'] of a decoder state: rows of every tensor in it (dim 0)."""
        if isinstance(state, torch.Tensor):
            return state.index_select(0, index)
        if isinstance(state, (tuple, list)):
            return type(state)(self.select(part, index) for part in state)
        if isinstance(state, dict):
            return {key: self.select(part, index) for key, part in state.items()}
        raise TypeError(f"select: cannot index a decoder state of type {type(state).__name__}; "
                        f"override Seq2SeqAdapter.select")

    def decoder_states(self, state: Any) -> torch.Tensor:
        """The decoder states [B, H] to show for a state returned by `step` (default: the state itself, or the
        first tensor of a tuple or list, as the h of an LSTM's (h, c))."""
        while isinstance(state, (tuple, list)) and state:
            state = state[0]
        if not isinstance(state, torch.Tensor):
            raise TypeError(f"decoder_states: no tensor in a decoder state of type {type(state).__name__}; "
                            f"override Seq2SeqAdapter.decoder_states")
        return state

    def source_embeddings(self) -> torch.Tensor | None:
        """The source embedding matrix [len(source_vocab), E], for substitution neighbours; None when the model
        has none to offer."""
        return None
