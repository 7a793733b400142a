"""The translate demo: English dates rewritten in French or German by an attention encoder-decoder.

The pairs come from the CLDR date formats that babel ships: a source is a target-language tag and an
English date ("<fr> Tuesday , March 5 , 2024", full, long or medium format), the target the same date in
that language's full or long format ("mardi 5 mars 2024", "Dienstag , 5. März 2024"): day and month swap
places, the weekday's comma comes and goes, abbreviations expand. Words are tokens, with commas split off.
Dates run from 1900 to 2099; every twentieth day is held out, and the held-out exact-match accuracy is
measured with seqvis's own decoding.

The model is Luong's: a bidirectional LSTM encoder, an LSTM decoder fed its previous attentional state, and
global "general" attention, trained so that attention aligns with the words (see `DateTranslator`).
`load_adapter` (the project's factory) rebuilds it at whatever sizes its weights have, so any model of this
architecture with its two dictionaries is served the same way. The project also holds the encoder and decoder
states of every training pair for neighbour search (layout in `write_states`).
"""
from __future__ import annotations

import datetime
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
import yaml
from babel.dates import format_date
from torch import nn

from seqvis.demo import torch_threads
from seqvis.progress import Progress
from seqvis.projects import ProjectError, Seq2SeqProject
from seqvis.translate import Encoding, Seq2SeqAdapter, beam_search, greedy
from seqvis.vocab import read_dict, write_dict

LANGUAGES = ("fr", "de")
FORMATS = {"full": "full", "long": "long", "medium": "long"}  # English source format -> target format
FIRST_DAY, LAST_DAY = datetime.date(1900, 1, 1), datetime.date(2099, 12, 31)
HELD_OUT_EVERY = 20
PAD, BOS, EOS = "<pad>", "<s>", "</s>"
WEIGHTS_FILE, SOURCE_DICT, TARGET_DICT, STATES_FILE = "model.pt", "source.dict", "target.dict", "states.h5"
_WORDS = re.compile(r"[^\s,]+|,")


@dataclass(frozen=True)
class Plan:
    """The sizes of one build: model, training (stops at `steps` or after `seconds`), data, torch threads."""

    embedding: int
    encoder: int        # units per direction
    decoder: int
    batch: int
    steps: int
    seconds: float
    learning_rate: float
    train_pairs: int
    test_pairs: int
    beam_test_pairs: int
    threads: int


# One thread: the matrices are small, and a second thread only waits on the first (badly, on a busy machine).
FULL = Plan(embedding=64, encoder=64, decoder=128, batch=64, steps=3000, seconds=360.0, learning_rate=3e-3,
            train_pairs=12_000, test_pairs=2000, beam_test_pairs=500, threads=1)
TINY = Plan(embedding=16, encoder=16, decoder=32, batch=32, steps=150, seconds=8.0, learning_rate=1e-2,
            train_pairs=600, test_pairs=100, beam_test_pairs=20, threads=1)


def tokenize(text: str) -> list[str]:
    """Words of a date, with commas split off: "Tuesday, March 5" -> ["Tuesday", ",", "March", "5"]."""
    return _WORDS.findall(text)


def detokenize(words: list[str]) -> str:
    return " ".join(words).replace(" ,", ",")


def date_pair(day: datetime.date, language: str, form: str) -> tuple[list[str], list[str]]:
    """The source and target words of `day` for a target `language` and an English `form` (see FORMATS)."""
    source = [f"<{language}>", *tokenize(format_date(day, form, locale="en"))]
    return source, tokenize(format_date(day, FORMATS[form], locale=language))


def sample(held_out: bool, count: int, rng: np.random.Generator) -> list[tuple[datetime.date, str, str]]:
    """`count` random (day, language, English form) of the training days (or of the held-out days: every
    `HELD_OUT_EVERY`-th from `FIRST_DAY`)."""
    offsets = np.arange((LAST_DAY - FIRST_DAY).days + 1)
    offsets = offsets[(offsets % HELD_OUT_EVERY == 0) == held_out]
    chosen = rng.choice(offsets, count)
    languages = rng.integers(0, len(LANGUAGES), count)
    forms = rng.integers(0, len(FORMATS), count)
    return [(FIRST_DAY + datetime.timedelta(days=int(offset)), LANGUAGES[language], list(FORMATS)[form])
            for offset, language, form in zip(chosen, languages, forms)]


class DateTranslator(nn.Module):
    """A global-attention encoder-decoder after Luong et al. (2015): a bidirectional LSTM encoder, an LSTMCell
    decoder fed [target embedding; previous attentional state], "general" attention scores h_t W m_s, and the
    attentional state tanh(W [context; h_t]) that predicts the next word.

    Attention reads a memory of [word embedding; encoder state] per source position, and the decoder starts
    from zeros: all it knows of the source comes through attention. In training, a position's encoder state is
    dropped whole with probability `context_dropout`, so the decoder learns to find a word at its own position
    rather than in the summary of the sentence that a bidirectional LSTM carries to every position: attention
    then aligns with the words it translates. Embeddings start small (std 0.1) so that what the model learnt,
    not the random start, decides which words are near each other (the substitutes offered).
    """

    def __init__(self, source_words: int, target_words: int, embedding: int, encoder: int, decoder: int,
                 context_dropout: float = 0.5):
        super().__init__()
        self.context_dropout = context_dropout
        self.source_embed = nn.Embedding(source_words, embedding, padding_idx=0)
        self.encoder = nn.LSTM(embedding, encoder, batch_first=True, bidirectional=True)
        self.target_embed = nn.Embedding(target_words, embedding, padding_idx=0)
        self.decoder = nn.LSTMCell(embedding + decoder, decoder)
        memory = embedding + 2 * encoder
        self.keys = nn.Linear(memory, decoder, bias=False)
        self.combine = nn.Linear(memory + decoder, decoder)
        self.out = nn.Linear(decoder, target_words)
        with torch.no_grad():
            for table in (self.source_embed, self.target_embed):
                table.weight.normal_(0, 0.1)
                table.weight[0] = 0

    def encode(self, source: torch.Tensor, lengths: torch.Tensor):
        """Source ids [B, S] (padded after `lengths`) -> encoder states [B, S, 2E], memory [B, S, M], keys
        [B, S, D], mask [B, S] and the decoder's initial state (h, c, attentional state), all zero."""
        embedded = self.source_embed(source)
        packed = nn.utils.rnn.pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        states = nn.utils.rnn.pad_packed_sequence(self.encoder(packed)[0], batch_first=True,
                                                  total_length=source.shape[1])[0]
        context = states
        if self.training and self.context_dropout:
            keep = torch.rand(states.shape[:2] + (1,)) >= self.context_dropout
            context = states * keep / (1 - self.context_dropout)
        memory = torch.cat([embedded, context], dim=-1)
        mask = torch.arange(source.shape[1])[None] < lengths[:, None]
        zeros = states.new_zeros(len(source), self.decoder.hidden_size)
        return states, memory, self.keys(memory), mask, (zeros, zeros, zeros)

    def step(self, memory: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None, state, previous: torch.Tensor,
             attention: torch.Tensor | None = None):
        """One step for B rows: (log-probabilities [B, V], attention [B, S], (h, c, attentional state)).
        Given `attention`, the context is computed from it instead of from the scores."""
        h, c, feed = state
        h, c = self.decoder(torch.cat([self.target_embed(previous), feed], dim=-1), (h, c))
        if attention is None:
            scores = torch.bmm(keys, h[:, :, None])[:, :, 0]
            if mask is not None:
                scores = scores.masked_fill(~mask, -torch.inf)
            attention = scores.softmax(dim=-1)
        context = torch.bmm(attention[:, None], memory)[:, 0]
        feed = torch.tanh(self.combine(torch.cat([context, h], dim=-1)))
        return self.out(feed).log_softmax(dim=-1), attention, (h, c, feed)

    def teacher_forced(self, source: torch.Tensor, lengths: torch.Tensor, target: torch.Tensor):
        """Log-probabilities [B, T, V] of each next word of `target` [B, T] (starting with <s>), the encoder
        states [B, S, 2E] and the attentional states [B, T, D]."""
        states, memory, keys, mask, state = self.encode(source, lengths)
        log_probs, decoder_states = [], []
        for t in range(target.shape[1]):
            out, _, state = self.step(memory, keys, mask, state, target[:, t])
            log_probs.append(out)
            decoder_states.append(state[2])
        return torch.stack(log_probs, 1), states, torch.stack(decoder_states, 1)


class DateAdapter(Seq2SeqAdapter):
    """A `DateTranslator` through seqvis's adapter protocol. Encoder states shown are the bidirectional LSTM's,
    decoder states the attentional states that predict each word."""

    special_source_tokens = frozenset({PAD})

    def __init__(self, model: DateTranslator, source_vocab: list[str], target_vocab: list[str]):
        self.model, self.source_vocab, self.target_vocab = model.eval(), source_vocab, target_vocab
        self.bos, self.eos = target_vocab.index(BOS), target_vocab.index(EOS)

    def tokenize_source(self, text: str) -> list[str]:
        return tokenize(text)

    def tokenize_target(self, text: str) -> list[str]:
        return tokenize(text)

    def detokenize_target(self, words: list[str]) -> str:
        return detokenize(list(words))

    def encode(self, source: torch.Tensor) -> Encoding:
        states, memory, keys, _, state = self.model.encode(source[None], torch.tensor([len(source)]))
        return Encoding(states=states[0], state=state, memory=(memory[0], keys[0]))

    def step(self, memory, state, previous, attention=None):
        values, keys = memory
        rows = len(previous)
        return self.model.step(values.expand(rows, -1, -1), keys.expand(rows, -1, -1), None, state, previous,
                               attention)

    def decoder_states(self, state) -> torch.Tensor:
        return state[2]

    def source_embeddings(self) -> torch.Tensor:
        return self.model.source_embed.weight


def load_adapter(project: Seq2SeqProject) -> DateAdapter:
    """The project's factory: a `DateTranslator` sized after its weights, with the project's dictionaries."""
    for key in ("source_vocab", "target_vocab"):
        if key not in project.files:
            raise ProjectError(f"seqvis.yml files: missing '{key}' (the 'word id' dictionary of the model)")
    source_vocab, target_vocab = read_dict(project.files["source_vocab"]), read_dict(project.files["target_vocab"])
    weights = torch.load(project.model.weights, weights_only=True, map_location="cpu")
    try:
        sizes = dict(source_words=weights["source_embed.weight"].shape[0],
                     target_words=weights["target_embed.weight"].shape[0],
                     embedding=weights["source_embed.weight"].shape[1],
                     encoder=weights["encoder.weight_hh_l0"].shape[1], decoder=weights["decoder.weight_hh"].shape[1])
    except (KeyError, TypeError, AttributeError) as error:
        raise ProjectError(f"{project.model.weights.name}: not a DateTranslator state dict ({error!r} missing)") \
            from None
    for side, words in (("source", source_vocab), ("target", target_vocab)):
        if sizes[f"{side}_words"] != len(words):
            raise ProjectError(f"{project.model.weights.name}: the model has {sizes[f'{side}_words']} {side} words, "
                               f"the {side} dictionary {len(words)}")
    model = DateTranslator(**sizes)
    model.load_state_dict(weights)
    return DateAdapter(model, source_vocab, target_vocab)


# -- building the demo ------------------------------------------------------------------------------------------
def _batch(rows: list[list[int]], *, bos: int | None = None, eos: int | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Id lists padded with 0 into [B, T], optionally framed by bos/eos, and their lengths."""
    rows = [([bos] if bos is not None else []) + row + ([eos] if eos is not None else []) for row in rows]
    lengths = torch.tensor([len(row) for row in rows])
    out = torch.zeros(len(rows), int(lengths.max()), dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, :len(row)] = torch.tensor(row)
    return out, lengths


def train(model: DateTranslator, sources: list[list[int]], targets: list[list[int]], bos: int, eos: int, plan: Plan,
          progress: Progress, rng: np.random.Generator) -> dict:
    """Teacher-forced cross-entropy on random batches with Adam and a cosine learning rate; stops after
    `plan.steps` steps or `plan.seconds`, whichever is nearer (the schedule and progress follow it)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=plan.learning_rate)
    model.train()
    losses: list[float] = []
    reported, started = 0, time.monotonic()
    progress.start("train", plan.steps)
    for step in range(plan.steps):
        done = max(step / plan.steps, (time.monotonic() - started) / plan.seconds)
        progress.update(int(done * plan.steps) - reported)
        reported = int(done * plan.steps)
        if done >= 1:
            break
        for group in optimizer.param_groups:
            group["lr"] = plan.learning_rate * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * done)))
        rows = rng.integers(0, len(sources), plan.batch)
        source, lengths = _batch([sources[i] for i in rows])
        target, _ = _batch([targets[i] for i in rows], bos=bos, eos=eos)
        log_probs = model.teacher_forced(source, lengths, target[:, :-1])[0]
        loss = nn.functional.nll_loss(log_probs.reshape(-1, log_probs.shape[-1]), target[:, 1:].reshape(-1),
                                      ignore_index=0)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    curve = [round(float(np.mean(part)), 4) for part in np.array_split(losses, min(20, len(losses)))]
    return {"steps": len(losses), "seconds": round(time.monotonic() - started, 1),
            "stopped_by": "steps" if len(losses) == plan.steps else "time", "loss_per_word": curve}


def accuracy(adapter: DateAdapter, sources: list[list[int]], targets: list[list[int]], progress: Progress,
             beam: int = 1) -> float:
    """The fraction of pairs whose best translation (greedy, or beam search of width `beam`) is the target."""
    progress.start("evaluate" if beam == 1 else f"evaluate with beam {beam}", len(sources))
    right = 0
    for source, target in zip(sources, targets):
        result = greedy(adapter, source) if beam == 1 else beam_search(adapter, source, width=beam)
        right += result.best.ids == [*target, adapter.eos]
        progress.update(1)
    return right / len(sources)


@torch.no_grad()
def write_states(path: Path, model: DateTranslator, sources: list[list[int]], targets: list[list[int]], bos: int,
                 eos: int, progress: Progress, batch: int = 256) -> dict:
    """Store the encoder and decoder states of the pairs in `path`, one row per token, no padding rows:

    encoder/states [N_e, 2E] float32, one row per source token; decoder/states [N_d, D] float32, one row per
    target step, the state that predicts target token t (teacher forced on the reference; the step predicting
    </s> included), as `DateAdapter.decoder_states` shows it; {encoder,decoder}/sentence and /position (int32)
    name each row's pair and token position. Rows go pair by pair, so pair i's rows are
    sentences/{source,target}_offsets[i:i+2]; sentences/source and sentences/target (int32) hold the words
    (target ids end with </s>) in the project's dictionaries.
    """
    progress.start("store training states", len(sources))
    encoder, decoder = [], []
    for start in range(0, len(sources), batch):
        source, lengths = _batch(sources[start:start + batch])
        target, target_lengths = _batch(targets[start:start + batch], bos=bos, eos=eos)
        _, encoder_states, decoder_states = model.teacher_forced(source, lengths, target[:, :-1])
        for i in range(len(lengths)):
            encoder.append(encoder_states[i, :lengths[i]].numpy())
            decoder.append(decoder_states[i, :target_lengths[i] - 1].numpy())
        progress.update(len(lengths))
    source_lengths = np.array([len(rows) for rows in encoder])
    target_lengths = np.array([len(rows) for rows in decoder])
    with h5py.File(path, "w") as f:
        for side, rows, lengths in (("encoder", encoder, source_lengths), ("decoder", decoder, target_lengths)):
            states = np.concatenate(rows).astype(np.float32)
            f.create_dataset(f"{side}/states", data=states, chunks=(min(len(states), 4096), states.shape[1]))
            f[f"{side}/sentence"] = np.repeat(np.arange(len(lengths)), lengths).astype(np.int32)
            f[f"{side}/position"] = np.concatenate([np.arange(n) for n in lengths]).astype(np.int32)
        f["sentences/source"] = np.concatenate(sources).astype(np.int32)
        f["sentences/target"] = np.concatenate([[*row, eos] for row in targets]).astype(np.int32)
        f["sentences/source_offsets"] = np.concatenate([[0], np.cumsum(source_lengths)]).astype(np.int64)
        f["sentences/target_offsets"] = np.concatenate([[0], np.cumsum(target_lengths)]).astype(np.int64)
    return {"pairs": len(sources), "encoder_states": int(source_lengths.sum()),
            "decoder_states": int(target_lengths.sum()), "encoder_dims": int(encoder[0].shape[1]),
            "decoder_dims": int(decoder[0].shape[1])}


def build(out_dir: Path, progress: Progress, tiny: bool) -> None:
    """Generate the pairs, train the model, measure it on held-out days and write the project into `out_dir`."""
    plan = TINY if tiny else FULL
    with torch_threads(plan.threads):
        _build(Path(out_dir), progress, plan)


def _build(out_dir: Path, progress: Progress, plan: Plan) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    progress.start("format dates with babel")
    train_pairs = [date_pair(*item) for item in sample(False, plan.train_pairs, rng)]
    test_pairs = [date_pair(*item) for item in sample(True, plan.test_pairs, rng)]
    pairs = train_pairs + test_pairs
    source_vocab = [PAD, *sorted({word for source, _ in pairs for word in source})]
    target_vocab = [PAD, BOS, EOS, *sorted({word for _, target in pairs for word in target})]
    source_index = {word: i for i, word in enumerate(source_vocab)}
    target_index = {word: i for i, word in enumerate(target_vocab)}
    sources = [[source_index[word] for word in source] for source, _ in pairs]
    targets = [[target_index[word] for word in target] for _, target in pairs]
    bos, eos, n_train = target_index[BOS], target_index[EOS], len(train_pairs)

    model = DateTranslator(len(source_vocab), len(target_vocab), plan.embedding, plan.encoder, plan.decoder)
    training = train(model, sources[:n_train], targets[:n_train], bos, eos, plan, progress, rng)
    adapter = DateAdapter(model, source_vocab, target_vocab)
    exact = accuracy(adapter, sources[n_train:], targets[n_train:], progress)
    beam_exact = accuracy(adapter, sources[n_train:n_train + plan.beam_test_pairs],
                          targets[n_train:n_train + plan.beam_test_pairs], progress, beam=5)
    stored = write_states(out_dir / STATES_FILE, model, sources[:n_train], targets[:n_train], bos, eos, progress)

    torch.save(model.state_dict(), out_dir / WEIGHTS_FILE)
    write_dict(out_dir / SOURCE_DICT, source_vocab)
    write_dict(out_dir / TARGET_DICT, target_vocab)
    description = (f"English dates rewritten in French or German (babel's CLDR formats, {FIRST_DAY.year}-"
                   f"{LAST_DAY.year}) by an attention encoder-decoder (bidirectional LSTM 2 x {plan.encoder}, LSTM "
                   f"decoder {plan.decoder}, global attention), trained for {training['seconds'] / 60:.1f} minutes "
                   f"on {n_train:,} pairs; held-out exact match {100 * exact:.1f}% greedy on {len(test_pairs):,} "
                   f"pairs of unseen days ({100 * beam_exact:.1f}% with beam 5 on {plan.beam_test_pairs}). The encoder "
                   f"and decoder states of all training pairs are stored for neighbour search.")
    extra = {
        "held_out": {"exact_match": round(exact, 4), "pairs": len(test_pairs),
                     "beam5_exact_match": round(beam_exact, 4), "beam5_pairs": plan.beam_test_pairs,
                     "days": f"every {HELD_OUT_EVERY}th day from {FIRST_DAY}"},
        "training": {**training, "pairs": n_train, "batch": plan.batch, "learning_rate": plan.learning_rate,
                     "optimizer": "Adam, cosine schedule to 5%, gradient norm clipped at 1", "threads": plan.threads},
        "model": {"embedding": plan.embedding, "encoder": plan.encoder, "decoder": plan.decoder,
                  "attention": "global, general score", "source_words": len(source_vocab),
                  "target_words": len(target_vocab)},
        "states": {**stored, "file": STATES_FILE, "pairs_from": "the training set, in training-set order"},
        "examples": [detokenize(source) for source, _ in test_pairs[:8]],
    }
    config = {"seqvis": 1, "kind": "seq2seq", "name": "dates-en-fr-de", "description": description,
              "model": {"factory": f"{__name__}:load_adapter", "weights": WEIGHTS_FILE},
              "files": {"source_vocab": SOURCE_DICT, "target_vocab": TARGET_DICT, "states": STATES_FILE},
              "extra": extra}
    (out_dir / "seqvis.yml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
