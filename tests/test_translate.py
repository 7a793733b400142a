"""Decoding through the adapter protocol: greedy, beam search against exhaustive search, forced prefixes,
attention edits, the search tree, word swaps and substitutes; a GRU encoder-decoder without attention wrapped
through the same protocol."""
from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from seqvis.translate import (AdapterError, AttentionUnavailable, Encoding, Seq2SeqAdapter, beam_search,
                              embedding_neighbours, greedy, source_ids, target_ids, what_if)

SOURCE = ["<pad>", "a", "b", "c", "d", "e", "f"]
TARGET = ["<s>", "</s>", "x", "y", "z"]
SMALL_TARGET = ["<s>", "</s>", "x", "y"]
EOS = 1


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small models: one torch thread is fastest, and far faster than two on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def docstring_adapter_class() -> type:
    """The adapter class written out in `Seq2SeqAdapter`'s docstring, run as it stands."""
    block = Seq2SeqAdapter.__doc__.split("::\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if line.strip() and not line.startswith(" " * 8):
            break
        lines.append(line)
    namespace = {"Seq2SeqAdapter": Seq2SeqAdapter, "Encoding": Encoding, "torch": torch}
    exec(textwrap.dedent("\n".join(lines)), namespace)
    return namespace["MyAdapter"]


def attention_adapter(seed: int = 0, target: list[str] = TARGET, sharpness: float = 3.0) -> Seq2SeqAdapter:
    """The docstring's adapter around a small random LSTM model with dot-product attention."""
    torch.manual_seed(seed)
    model = nn.Module()
    model.source_embed = nn.Embedding(len(SOURCE), 8)
    model.encoder = nn.LSTM(8, 8, batch_first=True)
    model.target_embed = nn.Embedding(len(target), 8)
    model.cell = nn.LSTMCell(8, 8)
    model.out = nn.Linear(16, len(target))
    with torch.no_grad():
        model.out.weight.mul_(sharpness)
    return docstring_adapter_class()(model, SOURCE, target)


class GruModel(nn.Module):
    """A GRU encoder-decoder without attention: the decoder starts from the encoder's last state."""

    def __init__(self, seed: int = 0, hidden: int = 8):
        super().__init__()
        torch.manual_seed(seed)
        self.source_embed = nn.Embedding(len(SOURCE), 6)
        self.encoder = nn.GRU(6, hidden, batch_first=True)
        self.target_embed = nn.Embedding(len(TARGET), 6)
        self.decoder = nn.GRUCell(6, hidden)
        self.out = nn.Linear(hidden, len(TARGET))
        with torch.no_grad():
            self.out.weight.mul_(3)


class GruAdapter(Seq2SeqAdapter):
    """Its `step` takes no attention argument at all: seqvis must never pass one to a model without attention."""

    def __init__(self, model: GruModel):
        self.model, self.source_vocab, self.target_vocab = model.eval(), SOURCE, TARGET
        self.bos, self.eos = 0, EOS

    def encode(self, source):
        states, h = self.model.encoder(self.model.source_embed(source)[None])
        return Encoding(states=states[0], state=h[0])

    def step(self, memory, state, previous):
        h = self.model.decoder(self.model.target_embed(previous), state)
        return self.model.out(h).log_softmax(-1), None, h

    def source_embeddings(self):
        return self.model.source_embed.weight


def exhaustive(adapter: Seq2SeqAdapter, source: list[int], max_length: int, length_norm: float
               ) -> list[tuple[list[int], float]]:
    """Every finished output of at most `max_length` tokens with its score, ranked, one step at a time."""
    encoding = adapter.encode(torch.tensor(source))
    memory = encoding.states if encoding.memory is None else encoding.memory
    found = []

    def walk(state, previous: int, ids: list[int], score: float) -> None:
        if len(ids) == max_length:
            return
        with torch.no_grad():
            log_probs, _, state = adapter.step(memory, state, torch.tensor([previous]))
        for token in range(len(adapter.target_vocab)):
            extended = score + float(log_probs[0, token])
            if token == adapter.eos:
                found.append(([*ids, token], extended))
            else:
                walk(state, token, [*ids, token], extended)

    walk(encoding.state, adapter.bos, [], 0.0)
    return sorted(found, key=lambda item: -item[1] / len(item[0]) ** length_norm)


def path_ids(translation, node_id: int) -> list[int]:
    ids, node = [], translation.nodes[node_id]
    while node.parent is not None:
        ids.append(node.token)
        node = translation.nodes[node.parent]
    return ids[::-1]


SOURCES = [[1, 2, 3], [4], [6, 5, 4, 3, 2, 1], [2, 2, 3, 1]]


@pytest.mark.parametrize("make", [attention_adapter, lambda seed: GruAdapter(GruModel(seed))],
                         ids=["attention", "gru"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_of_width_one_is_greedy(make, seed):
    adapter = make(seed)
    for source in SOURCES:
        a = greedy(adapter, source, max_length=12)
        b = beam_search(adapter, source, width=1, max_length=12)
        assert a.best.ids == b.best.ids
        assert a.best.score == pytest.approx(b.best.score, abs=1e-9)
        assert a.best.finished == b.best.finished
        # greedy takes the most likely token at every step
        assert [int(top[0]) for top in a.best.top_ids] == a.best.ids


@pytest.mark.parametrize("length_norm", [0.0, 1.0])
@pytest.mark.parametrize("seed", [0, 3])
def test_wide_beam_equals_exhaustive_search(seed, length_norm):
    adapter = attention_adapter(seed, SMALL_TARGET)
    for source in SOURCES[:3]:
        expected = exhaustive(adapter, source, max_length=4, length_norm=length_norm)[:5]
        # 3 non-end tokens: at most 27 unfinished prefixes live at once, so a beam of 128 drops nothing
        result = beam_search(adapter, source, width=128, n_best=5, max_length=4, length_norm=length_norm)
        assert [h.ids for h in result.hypotheses] == [ids for ids, _ in expected]
        assert [h.score for h in result.hypotheses] == pytest.approx([s for _, s in expected], abs=1e-5)
        assert all(h.finished for h in result.hypotheses)
        normalized = [h.normalized for h in result.hypotheses]
        assert normalized == sorted(normalized, reverse=True)
        assert normalized[0] == pytest.approx(expected[0][1] / len(expected[0][0]) ** length_norm, abs=1e-5)


def test_a_narrow_beam_keeps_its_width_and_explains_its_scores():
    adapter = attention_adapter(1)
    result = beam_search(adapter, [1, 2, 3, 4], width=3, n_best=3, max_length=10)
    assert len(result.hypotheses) == 3
    for hypothesis in result.hypotheses:
        assert hypothesis.score == pytest.approx(sum(hypothesis.log_probs), abs=1e-9)
        assert path_ids(result, hypothesis.node) == hypothesis.ids
        # each chosen token's log-probability is the one the step offered for it
        for t, token in enumerate(hypothesis.ids):
            listed = dict(zip(hypothesis.top_ids[t].tolist(), hypothesis.top_log_probs[t].tolist()))
            if token in listed:
                assert listed[token] == pytest.approx(hypothesis.log_probs[t], abs=1e-6)
    depths = {}
    for node in result.nodes[1:]:
        if node.end != "eos":
            depths[node.depth] = depths.get(node.depth, 0) + 1
    assert max(depths.values()) <= 3


def test_the_tree_holds_pruned_branches_and_top_k_at_every_expanded_node():
    adapter = attention_adapter(2)
    result = beam_search(adapter, [6, 5, 4, 3], width=3, n_best=2, max_length=12, top_k=4)
    nodes = result.nodes
    children = {}
    for node in nodes[1:]:
        parent = nodes[node.parent]
        assert node.depth == parent.depth + 1
        assert node.score == pytest.approx(parent.score + node.log_prob, abs=1e-9)
        children.setdefault(node.parent, []).append(node)
    pruned = [node for node in nodes if node.end == "pruned"]
    assert pruned, "a beam of 3 over 12 steps drops some branches"
    assert all(node.id not in children and node.top_ids is not None for node in pruned)
    assert {node.end for node in nodes} <= {None, "eos", "pruned", "length", "stopped"}
    for node in nodes:
        if node.end is None:
            assert node.id in children
        if node.top_ids is not None:
            assert len(node.top_ids) == 4 and list(node.top_log_probs) == sorted(node.top_log_probs, reverse=True)
            assert node.attention.shape == (4,) and node.attention.sum() == pytest.approx(1, abs=1e-5)
    assert [node.rank for node in nodes if node.rank is not None] == [0, 1]
    assert nodes[result.hypotheses[0].node].rank == 0


def test_forced_prefix_is_honoured_and_scored_by_the_model():
    adapter = attention_adapter(0)
    source = [1, 2, 3]
    free = greedy(adapter, source, max_length=10)
    least_likely = int(free.best.top_ids[0][-1])  # a first token greedy would never choose
    for decode in (greedy, beam_search):
        forced = decode(adapter, source, prefix=[least_likely, 3], max_length=10)
        assert forced.best.ids[:2] == [least_likely, 3]
        assert forced.best.log_probs[0] == pytest.approx(float(free.best.top_log_probs[0][-1]), abs=1e-6)
        assert forced.best.score == pytest.approx(sum(forced.best.log_probs), abs=1e-9)
        assert forced.settings["prefix"] == [least_likely, 3]
    # forcing greedy's own first tokens changes nothing
    again = greedy(adapter, source, prefix=free.best.ids[:2], max_length=10)
    assert again.best.ids == free.best.ids
    # a prefix ending with the end token is the whole output
    whole = beam_search(adapter, source, prefix=[2, 4, EOS], max_length=10)
    assert whole.best.ids == [2, 4, EOS] and whole.best.finished


@pytest.mark.parametrize("prefix, message", [
    ([9], "prefix: id 9 at position 0 is not in the target vocabulary"),
    ([2, EOS, 3], "prefix: position 1 is the end token"),
    ([2] * 6, "prefix: has 6 tokens, more than max_length 5"),
])
def test_bad_prefixes_are_refused(prefix, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        beam_search(attention_adapter(), [1, 2], prefix=prefix, max_length=5)


def test_attention_edit_replaces_the_context_at_that_step():
    adapter = attention_adapter(0)
    source, prefix = [1, 2, 3, 4], [2, 3, 4]
    edit = [2.0, 0.0, 0.0, 2.0]                       # normalisable: becomes [0.5, 0, 0, 0.5]
    plain = greedy(adapter, source, prefix=prefix, max_length=8)
    edited = greedy(adapter, source, prefix=prefix, max_length=8, attention={1: edit})
    assert np.allclose(edited.best.attention[1], [0.5, 0, 0, 0.5])
    assert np.allclose(edited.best.attention[0], plain.best.attention[0])     # other steps keep their own
    assert not np.allclose(plain.best.attention[1], [0.5, 0, 0, 0.5])

    # Recompute step 1 by hand from the model's parts with context = 0.5 m_0 + 0.5 m_3.
    model = adapter.model
    with torch.no_grad():
        memory, (h, c) = model.encoder(model.source_embed(torch.tensor(source))[None])
        memory, state = memory[0], (h[-1], c[-1])
        state = model.cell(model.target_embed(torch.tensor([0])), state)       # step 0 from <s>
        h, _ = model.cell(model.target_embed(torch.tensor([prefix[0]])), state)  # step 1 from the first token
        context = 0.5 * memory[0] + 0.5 * memory[3]
        expected = model.out(torch.cat([h[0], context])).log_softmax(-1)
    top = torch.topk(expected, 5)
    assert edited.best.top_ids[1].tolist() == top.indices.tolist()
    assert np.allclose(edited.best.top_log_probs[1], top.values.numpy(), atol=1e-5)
    assert edited.best.log_probs[1] == pytest.approx(float(expected[prefix[1]]), abs=1e-5)


def test_attention_edit_applies_to_every_hypothesis_of_the_step():
    adapter = attention_adapter(1)
    weights = [0.1, 0.2, 0.3, 0.4]
    result = beam_search(adapter, [4, 3, 2, 1], width=4, max_length=8, attention={1: weights})
    expanded = [node for node in result.nodes if node.depth == 1 and node.attention is not None]
    assert len(expanded) >= 2
    assert all(np.allclose(node.attention, weights) for node in expanded)
    assert result.settings["attention"] == {1: pytest.approx(weights)}


@pytest.mark.parametrize("edit, message", [
    ({1: [1, 0]}, "attention: step 1 has 2 weights, the source has 3 tokens"),
    ({0: [1, -1, 1]}, "attention: step 0 has a negative weight"),
    ({0: [0, 0, 0]}, "attention: step 0 sums to 0 and cannot be normalised"),
    ({0: [1, math.nan, 0]}, "attention: step 0 has a weight that is not a finite number"),
    ({5: [1, 0, 0]}, r"attention: step 5 is out of range \(0..4\)"),
    ({-1: [1, 0, 0]}, r"attention: step -1 is out of range"),
])
def test_bad_attention_edits_are_refused(edit, message):
    with pytest.raises(ValueError, match=message):
        greedy(attention_adapter(), [1, 2, 3], max_length=5, attention=edit)


def test_what_if_swaps_a_source_word_and_decodes_both():
    adapter = attention_adapter(0)
    original, edited = what_if(adapter, [1, 2, 3], swap=(1, 5), beam=3, n_best=2, max_length=8)
    assert original.source_ids == [1, 2, 3] and edited.source_ids == [1, 5, 3]
    assert [h.ids for h in original.hypotheses] == [h.ids for h in beam_search(
        adapter, [1, 2, 3], width=3, n_best=2, max_length=8).hypotheses]
    assert [h.ids for h in edited.hypotheses] == [h.ids for h in beam_search(
        adapter, [1, 5, 3], width=3, n_best=2, max_length=8).hypotheses]
    # the edits apply to the edited side only
    original, edited = what_if(adapter, [1, 2, 3], prefix=[4], beam=1, max_length=8)
    assert edited.best.ids[0] == 4 and original.settings["prefix"] == []
    with pytest.raises(ValueError, match=r"swap: position 3 is not a source position \(0..2\)"):
        what_if(adapter, [1, 2, 3], swap=(3, 1))


def test_embedding_neighbours_are_cosine_nearest():
    adapter = attention_adapter(0)
    with torch.no_grad():
        weight = adapter.model.source_embed.weight
        weight[:] = torch.randn_like(weight)
        weight[4] = 3 * weight[2] + 0.1 * torch.randn(8)   # nearly parallel to "b", much longer
        weight[5] = -weight[2]                              # opposite
    found = embedding_neighbours(adapter, 2, k=10)
    assert found[0][0] == 4 and found[0][1] > 0.95
    assert found[-1][0] == 5 and found[-1][1] == pytest.approx(-1, abs=1e-5)
    assert len(found) == len(SOURCE) - 1 and 2 not in [i for i, _ in found]
    adapter.special_source_tokens = frozenset({"<pad>"})
    assert 0 not in [i for i, _ in embedding_neighbours(adapter, 2, k=10)]


def test_words_map_to_ids_and_bad_words_are_named():
    adapter = attention_adapter()
    assert source_ids(adapter, "a  c b") == [1, 3, 2]
    assert target_ids(adapter, "x z") == [2, 4]
    with pytest.raises(ValueError, match="source: is empty"):
        source_ids(adapter, "   ")
    with pytest.raises(ValueError, match="source: has 4 tokens, at most 3 allowed"):
        source_ids(adapter, "a b c d", max_tokens=3)
    with pytest.raises(ValueError, match=r"source: unknown source token\(s\) 'q', 'r'"):
        source_ids(adapter, "a q r q")
    with pytest.raises(ValueError, match=r"prefix: unknown target token\(s\) 'w'"):
        target_ids(adapter, "x w")


def test_adapter_bugs_are_reported_as_such():
    class Logits(GruAdapter):
        def step(self, memory, state, previous):
            log_probs, attention, state = super().step(memory, state, previous)
            return log_probs + 1.0, attention, state

    with pytest.raises(AdapterError, match=r"log_softmax"):
        greedy(Logits(GruModel()), [1, 2])

    class Flat(GruAdapter):
        def encode(self, source):
            encoding = super().encode(source)
            return encoding._replace(states=encoding.states.flatten())

    with pytest.raises(AdapterError, match=r"encode must return states shaped \[S=2, D\]"):
        greedy(Flat(GruModel()), [1, 2])


def test_gru_without_attention_does_everything_that_needs_no_attention():
    adapter = GruAdapter(GruModel(0))
    source = [1, 2, 3, 4]
    result = beam_search(adapter, source, width=3, n_best=2, max_length=10, top_k=3, length_norm=0.5)
    assert not result.has_attention
    assert result.encoder_states.shape == (4, 8)
    for hypothesis in result.hypotheses:
        assert hypothesis.attention is None
        steps = len(hypothesis.ids)
        assert hypothesis.states.shape == (steps, 8) and hypothesis.top_ids.shape == (steps, 3)
    assert all(node.attention is None for node in result.nodes)

    forced = greedy(adapter, source, prefix=[4, 4], max_length=10)
    assert forced.best.ids[:2] == [4, 4]
    original, swapped = what_if(adapter, source, swap=(0, 6), beam=2, max_length=10)
    assert swapped.source_ids == [6, 2, 3, 4] and original.source_ids == source
    assert len(embedding_neighbours(adapter, 1, k=3)) == 3

    with pytest.raises(AttentionUnavailable, match="attention: this model's decoder steps return no attention"):
        beam_search(adapter, source, attention={0: [1, 0, 0, 0]})
    with pytest.raises(AttentionUnavailable):
        what_if(adapter, source, attention={1: [0, 1, 0, 0]}, beam=1)


def test_decoding_options_are_checked():
    adapter = attention_adapter()
    with pytest.raises(ValueError, match="width: must be at least 1"):
        beam_search(adapter, [1], width=0)
    with pytest.raises(ValueError, match="n_best: must be between 1 and the beam width 2"):
        beam_search(adapter, [1], width=2, n_best=3)
    with pytest.raises(ValueError, match="source: id 7 is not in the source vocabulary"):
        greedy(adapter, [7])
    with pytest.raises(ValueError, match="source: is empty"):
        greedy(adapter, [])
    cut = greedy(adapter, [1, 2], max_length=1)
    assert len(cut.best.ids) == 1 and cut.nodes[cut.best.node].end in ("eos", "length")
