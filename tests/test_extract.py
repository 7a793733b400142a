"""seqvis.extract and seqvis.vocab: a user's model run over a corpus into a token-states project on disk."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from seqvis.cli import main
from seqvis.extract import extract_corpus, load_model, recurrent_states, write_token_project
from seqvis.projects import open_project
from seqvis.vocab import Tokenizer, escape_word, read_dict, split_documents, write_dict

VOCAB = 23
ROOT = Path(__file__).resolve().parents[1]


class TinyLM(nn.Module):
    """Embedding -> 2-layer recurrent module -> linear: the shape of the language models users bring."""

    def __init__(self, cell: type[nn.RNNBase] = nn.LSTM, *, bidirectional: bool = False, batch_first: bool = True):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 6)
        self.rnn = cell(6, 10, num_layers=2, batch_first=batch_first, bidirectional=bidirectional)
        self.out = nn.Linear(10 * (2 if bidirectional else 1), VOCAB)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        y, _ = self.rnn(x if self.rnn.batch_first else x.transpose(0, 1))
        return self.out(y if self.rnn.batch_first else y.transpose(0, 1))


class Mixer(nn.Module):
    """A custom non-recurrent layer: a causal convolution returning a tuple of a 4-D map and a side value."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(6, 6, kernel_size=3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(nn.functional.pad(x.transpose(1, 2), (2, 0))).transpose(1, 2)
        return torch.tanh(y).reshape(*y.shape[:2], 2, 3), y.mean()


class ConvLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 6)
        self.block = nn.ModuleDict({"mix": Mixer()})
        self.out = nn.Linear(6, VOCAB)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mixed, _ = self.block["mix"](self.embed(ids))
        return self.out(mixed.flatten(2))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and these tests share two cores with others."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_lstm() -> TinyLM:
    """The factory the CLI tests name: the same weights on every call."""
    torch.manual_seed(3)
    return TinyLM()


def not_a_module() -> str:
    return "a string"


def make(cell=nn.LSTM, seed: int = 0, **kwargs) -> TinyLM:
    torch.manual_seed(seed)
    return TinyLM(cell, **kwargs).eval()


def forward_states(model: TinyLM, ids: np.ndarray) -> dict[str, np.ndarray]:
    """What a plain forward over `ids` alone from a zero state gives: the stepped rnn states and the logits."""
    with torch.no_grad():
        x = model.embed(torch.as_tensor(ids, dtype=torch.long)[None])
        stepped = recurrent_states(model.rnn, x if model.rnn.batch_first else x.transpose(0, 1))
        states = {f"rnn.{key}": value[0].numpy() for key, value in stepped.items()}
        states["out"] = model(torch.as_tensor(ids, dtype=torch.long)[None])[0].numpy()
    return states


def read_states(folder: Path) -> dict[str, np.ndarray]:
    with h5py.File(folder / "states.h5", "r") as file:
        return {key: file[key][:] for key in file}


def words(n: int = VOCAB) -> list[str]:
    return [f"w{i}" for i in range(n)]


def assert_rows_match(states: dict[str, np.ndarray], expected: dict[str, np.ndarray], start: int) -> None:
    for key, values in expected.items():
        np.testing.assert_allclose(states[key][start:start + len(values)], values, atol=1e-5, err_msg=key)


# --- stepping recurrent modules with their own weights -------------------------------------------------------

@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("proj_size", [0, 4])
def test_stepped_lstm_equals_module_output_and_final_states(batch_first, bidirectional, proj_size):
    torch.manual_seed(1)
    lstm = nn.LSTM(5, 7, num_layers=2, batch_first=batch_first, bidirectional=bidirectional, proj_size=proj_size)
    x = torch.randn((3, 40, 5) if batch_first else (40, 3, 5))
    directions = 2 if bidirectional else 1
    hx = (torch.randn(2 * directions, 3, proj_size or 7), torch.randn(2 * directions, 3, 7))
    with torch.no_grad():
        output, (h_n, c_n) = lstm(x, hx)
        stepped = recurrent_states(lstm, x, hx)
    last = torch.cat([stepped["l1.h"], *([stepped["l1.h.reverse"]] if bidirectional else [])], dim=-1)
    torch.testing.assert_close(last, output if batch_first else output.transpose(0, 1), atol=1e-5, rtol=0)
    for k in range(2):
        for d, tail, final in ((0, "", -1), (1, ".reverse", 0))[:directions]:
            torch.testing.assert_close(stepped[f"l{k}.c{tail}"][:, final], c_n[k * directions + d], atol=1e-5, rtol=0)
            torch.testing.assert_close(stepped[f"l{k}.h{tail}"][:, final], h_n[k * directions + d], atol=1e-5, rtol=0)
    assert stepped["l0.h"].shape == (3, 40, proj_size or 7) and stepped["l0.c"].shape == (3, 40, 7)


@pytest.mark.parametrize("module", [nn.GRU(5, 7, 2, bidirectional=True, batch_first=True),
                                    nn.RNN(5, 7, 2, nonlinearity="relu", bias=False, batch_first=True)])
def test_stepped_gru_and_rnn_equal_module_output(module):
    x = torch.randn(2, 30, 5)
    with torch.no_grad():
        output, h_n = module(x)
        stepped = recurrent_states(module, x)
    last = torch.cat([stepped["l1.h"], *([stepped["l1.h.reverse"]] if module.bidirectional else [])], dim=-1)
    torch.testing.assert_close(last, output, atol=1e-5, rtol=0)
    torch.testing.assert_close(stepped["l0.h"][:, -1], h_n[0], atol=1e-5, rtol=0)
    assert not any(key.endswith(".c") for key in stepped)


# --- state handling -------------------------------------------------------------------------------------------

def test_carry_with_one_stream_equals_a_full_forward(tmp_path):
    model = make()
    ids = np.random.default_rng(0).integers(0, VOCAB, 700)
    out = write_token_project(tmp_path / "p", model=model, token_ids=ids, vocab=words(), layers=["rnn", "out"],
                              name="carry", batch_size=1, segment=64)
    states = read_states(out)
    assert sorted(states) == ["out", "rnn.l0.c", "rnn.l0.h", "rnn.l1.c", "rnn.l1.h"]
    assert_rows_match(states, forward_states(model, ids), 0)


def test_recurrent_modules_carry_their_state_when_only_a_later_layer_is_named(tmp_path):
    model = make(nn.GRU)
    ids = np.random.default_rng(7).integers(0, VOCAB, 300)
    out = write_token_project(tmp_path / "p", model=model, token_ids=ids, vocab=words(), layers=["out"],
                              name="logits", batch_size=1, segment=32)
    states = read_states(out)
    assert list(states) == ["out"]
    np.testing.assert_allclose(states["out"], forward_states(model, ids)["out"], atol=1e-5)


def test_carry_streams_reset_only_at_the_listed_stream_starts(tmp_path):
    model = make(batch_first=False)
    ids = np.random.default_rng(1).integers(0, VOCAB, 5 * 256 + 37)
    out = write_token_project(tmp_path / "p", model=model, token_ids=ids, vocab=words(), layers=["rnn"],
                              name="streams", batch_size=4, segment=128)
    resets = yaml.safe_load((out / "seqvis.yml").read_text())["extra"]["extraction"]["resets"]
    assert resets == [0, 512, 768, 1024]
    states = read_states(out)
    for start, stop in zip(resets, [*resets[1:], len(ids)]):
        expected = forward_states(model, ids[start:stop])
        del expected["out"]
        assert_rows_match(states, expected, start)


@pytest.mark.parametrize("cell, bidirectional, segment", [(nn.LSTM, False, 16), (nn.GRU, True, 512)])
def test_document_state_starts_every_document_from_zero(tmp_path, cell, bidirectional, segment):
    """Long documents are carried across segments (LSTM); whole documents in one call are exact both ways (GRU)."""
    model = make(cell, bidirectional=bidirectional)
    rng = np.random.default_rng(2)
    lengths = rng.integers(1, 60, 40)
    ids = rng.integers(0, VOCAB, lengths.sum())
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    out = write_token_project(tmp_path / "p", model=model, token_ids=ids, vocab=words(), layers=["rnn", "out"],
                              documents=starts, state="document", name="docs", batch_size=8, segment=segment)
    states = read_states(out)
    if bidirectional:
        assert "rnn.l1.h.reverse" in states and not any(".c" in key for key in states)
    for start, length in zip(starts, lengths):
        assert_rows_match(states, forward_states(model, ids[start:start + length]), start)
    with h5py.File(out / "meta.h5") as meta:
        np.testing.assert_array_equal(meta["doc"][:], np.repeat(np.arange(40), lengths))


def test_windows_are_independent_forwards(tmp_path):
    model = make(nn.GRU, bidirectional=True)
    ids = np.random.default_rng(3).integers(0, VOCAB, 230)
    out = write_token_project(tmp_path / "p", model=model, token_ids=ids, vocab=words(), layers=["rnn", "out"],
                              state="window:50", name="windows", batch_size=3)
    states = read_states(out)
    for start in range(0, 230, 50):
        assert_rows_match(states, forward_states(model, ids[start:start + 50]), start)


def test_custom_layer_output_is_one_flattened_layer(tmp_path):
    torch.manual_seed(4)
    model = ConvLM().eval()
    ids = np.random.default_rng(4).integers(0, VOCAB, 90)
    out = write_token_project(tmp_path / "p", model=model, token_ids=ids, vocab=words(), layers=["block.mix"],
                              state="window:30", name="conv")
    states = read_states(out)
    with torch.no_grad():
        windows = torch.as_tensor(ids).reshape(3, 30)
        expected = model.block["mix"](model.embed(windows))[0].reshape(90, 6).numpy()
    np.testing.assert_allclose(states["block.mix"], expected, atol=1e-6)


# --- the project on disk --------------------------------------------------------------------------------------

def test_project_files_open_with_meta_tracks_and_escaped_vocab(tmp_path):
    model = make()
    vocab = [" ", "\n", "\t", "a\\b", *words(VOCAB - 4)]
    ids = np.random.default_rng(5).integers(0, VOCAB, 300)
    meta = {"parity": {"type": "discrete", "values": ids % 2, "labels": ["even", "odd"]},
            "position": {"type": "scalar", "values": np.arange(300) / 10}}
    out = write_token_project(tmp_path / "p", model=model, token_ids=ids, vocab=vocab, layers=["rnn"],
                              meta=meta, name="files", description="meta test", extra={"note": "kept"})
    assert read_dict(out / "vocab.dict") == vocab
    assert all(len(line.split()) == 2 for line in (out / "vocab.dict").read_text().splitlines())
    with h5py.File(out / "states.h5") as file:
        assert file["rnn.l0.h"].dtype == np.float32 and file["rnn.l0.h"].chunks == (256, 10)
    with open_project(out) as project:
        assert len(project) == 300 and project.description == "meta test"
        assert list(project.layers) == ["rnn.l0.h", "rnn.l0.c", "rnn.l1.h", "rnn.l1.c"]
        np.testing.assert_array_equal(project.tokens[:], ids)
        assert project.meta["parity"].labels == ["even", "odd"]
        np.testing.assert_array_equal(project.meta["parity"].dataset[:], ids % 2)
        assert project.meta["position"].range == pytest.approx((0.0, 29.9))
        assert project.extra["note"] == "kept" and project.extra["extraction"]["state"] == "carry"


class FailingLM(TinyLM):
    """Fails on its third call, like a run interrupted half-way."""

    calls = 0

    def forward(self, ids):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("interrupted")
        return super().forward(ids)


def test_failed_build_leaves_nothing_and_keeps_an_existing_project(tmp_path):
    ids = np.random.default_rng(6).integers(0, VOCAB, 2000)
    target = tmp_path / "p"
    with pytest.raises(RuntimeError, match="interrupted"):
        write_token_project(target, model=FailingLM().eval(), token_ids=ids, vocab=words(), layers=["rnn"],
                            name="x", batch_size=1)
    assert list(tmp_path.iterdir()) == []
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(FileExistsError, match="overwrite"):
        write_token_project(target, model=make(), token_ids=ids, vocab=words(), layers=["rnn"], name="x")
    with pytest.raises(RuntimeError, match="interrupted"):
        write_token_project(target, model=FailingLM().eval(), token_ids=ids, vocab=words(), layers=["rnn"],
                            name="x", batch_size=1, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["p"] and (target / "old.txt").read_text() == "old"
    write_token_project(target, model=make(), token_ids=ids, vocab=words(), layers=["rnn"], name="x", overwrite=True)
    assert not (target / "old.txt").exists() and (target / "seqvis.yml").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["p"]


class TwiceLM(TinyLM):
    """Runs its recurrent module twice before its output layer."""

    def forward(self, ids):
        return self.out(self.rnn(self.rnn(self.embed(ids))[0][..., :6])[0])


class ScaledLSTM(nn.LSTM):
    """An LSTM subclass whose forward is not what its weights say: stepping cannot reproduce it."""

    def forward(self, x, hx=None):
        output, state = super().forward(x, hx)
        return output * 0.5, state


def test_layers_that_cannot_be_extracted_are_refused(tmp_path):
    ids = np.arange(40) % VOCAB
    kwargs = dict(token_ids=ids, vocab=words(), name="x")
    with pytest.raises(ValueError, match="ran 2 times in one forward"):
        write_token_project(tmp_path / "a", model=TwiceLM(), layers=["rnn", "out"], **kwargs)
    scaled = make()
    scaled.rnn.__class__ = ScaledLSTM
    with pytest.raises(ValueError, match="does not reproduce its output"):
        write_token_project(tmp_path / "b", model=scaled, layers=["rnn"], **kwargs)
    with pytest.raises(ValueError, match=r"layer 'embed\.weight' not found|'embed\.weight'"):
        write_token_project(tmp_path / "c", model=make(), layers=["embed.weight"], **kwargs)
    with pytest.raises(ValueError, match="expected \\[batch, time, units"):
        write_token_project(tmp_path / "d", model=ConvLM(), layers=["block.mix.conv"], **kwargs)
    with pytest.raises(ValueError, match="does the vocabulary match"):
        write_token_project(tmp_path / "e", model=make(), token_ids=np.arange(40), vocab=words(40), layers=["rnn"],
                            name="x")
    with pytest.raises(ValueError, match="state must be"):
        write_token_project(tmp_path / "f", model=make(), layers=["rnn"], state="window:0", **kwargs)
    with pytest.raises(ValueError, match="documents must start with 0"):
        write_token_project(tmp_path / "g", model=make(), layers=["rnn"], documents=np.array([3, 9]), **kwargs)
    with pytest.raises(ValueError, match="token_ids must lie in"):
        write_token_project(tmp_path / "h", model=make(), token_ids=ids, vocab=words(5), layers=["rnn"], name="x")
    with pytest.raises(ValueError, match="meta track names"):
        write_token_project(tmp_path / "i", model=make(), layers=["rnn"], **kwargs,
                            meta={"doc": {"type": "discrete", "values": ids}})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("track, message", [
    ({"type": "scalar", "values": np.zeros(5)}, "must have shape \\(40,\\)"),
    ({"type": "discrete", "values": np.zeros(40)}, "must be integers"),
    ({"type": "discrete", "values": np.arange(40), "labels": ["a", "b"]}, "must lie in \\[0, 2\\)"),
    ({"type": "scalar", "values": np.zeros(40), "range": [1, 0]}, "low <= high"),
    ({"type": "tags", "values": np.zeros(40)}, "'discrete' or 'scalar'"),
])
def test_meta_tracks_are_checked_before_any_work(tmp_path, track, message):
    model = FailingLM()
    with pytest.raises(ValueError, match=message):
        write_token_project(tmp_path / "p", model=model, token_ids=np.arange(40) % VOCAB, vocab=words(),
                            layers=["rnn"], name="x", meta={"tags": track})
    assert model.calls == 0 and not (tmp_path / "p").exists()


# --- loading models -------------------------------------------------------------------------------------------

def test_load_model_builds_and_loads_weights(tmp_path):
    weights = tmp_path / "w.pt"
    trained = make(seed=9)
    torch.save(trained.state_dict(), weights)
    model = load_model("tests.test_extract:tiny_lstm", weights)
    assert not model.training
    torch.testing.assert_close(model.out.weight, trained.out.weight)


def test_load_model_errors_name_the_problem(tmp_path):
    for spec, message in [("tests.test_extract", "must look like"), ("no_such_pkg.mod:f", "cannot import"),
                          ("tests.test_extract:missing", "has no attribute"),
                          ("tests.test_extract:VOCAB", "not a factory"),
                          ("tests.test_extract:not_a_module", "not a torch.nn.Module")]:
        with pytest.raises(ValueError, match=message):
            load_model(spec)
    spec = "tests.test_extract:tiny_lstm"
    with pytest.raises(FileNotFoundError, match="not found"):
        load_model(spec, tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a torch state dict file"):
        load_model(spec, tmp_path / "garbage.pt")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="does not hold a state dict"):
        load_model(spec, tmp_path / "list.pt")
    torch.save(make(nn.GRU).state_dict(), tmp_path / "gru.pt")
    with pytest.raises(ValueError, match="shape mismatch .*rnn.weight_ih_l0"):
        load_model(spec, tmp_path / "gru.pt")
    state = make().state_dict()
    state["extra.bias"] = state.pop("out.bias")
    torch.save(state, tmp_path / "renamed.pt")
    with pytest.raises(ValueError, match="missing keys out.bias; unexpected keys extra.bias"):
        load_model(spec, tmp_path / "renamed.pt")


# --- tokenizers, documents, dictionaries ----------------------------------------------------------------------

def test_tokenizers_map_tokens_and_unknowns():
    char = Tokenizer.fit("char", ["ba c", "ab\n"])
    assert char.vocab == ["\n", " ", "a", "b", "c"]
    np.testing.assert_array_equal(char.encode("cab \n"), [4, 2, 3, 1, 0])
    word = Tokenizer("word", ["<unk>", "the", "cat"])
    np.testing.assert_array_equal(word.encode("the  dog\ncat"), [1, 0, 2])
    with pytest.raises(ValueError, match=r"2 token\(s\) are not in the vocabulary.*'x', 'é'"):
        Tokenizer("char", ["a", "b"]).encode("abxé")
    with pytest.raises(ValueError, match="tokenizer kind"):
        Tokenizer("bpe", ["a"])


@given(st.text(alphabet="ab \n\t", max_size=40), st.sampled_from(["file", "line", "blank"]))
def test_documents_concatenate_back_to_the_text(text, how):
    pieces = split_documents(text, how)
    assert "".join(pieces) == text and all(pieces)
    if how == "line":
        assert all("\n" not in piece[:-1] for piece in pieces)


@settings(max_examples=60)
@given(st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=20))
def test_dictionaries_round_trip_any_words(tmp_path_factory, words_):
    path = tmp_path_factory.mktemp("dict") / "words.dict"
    write_dict(path, words_)
    assert read_dict(path) == words_
    assert all(not any(ch.isspace() for ch in escape_word(word)) for word in words_)


def test_read_dict_reads_lstmvis_dictionaries_raw(tmp_path):
    path = tmp_path / "train.dict"
    path.write_text("<unk> 1\nnew york 2\nc:\\n 3\n")
    assert read_dict(path, escaped=False) == ["", "<unk>", "new york", "c:\\n"]
    path.write_text("word\n")
    with pytest.raises(ValueError, match=r"train.dict line 1: expected a .word id. line"):
        read_dict(path)


# --- the command line -----------------------------------------------------------------------------------------

def test_cli_extracts_documents_with_a_vocabulary_file(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("abc ab\nba\n\ncab cab c\n")
    vocab = tmp_path / "chars.dict"
    write_dict(vocab, ["<unk>", "\n", " ", "a", "b", "c"])
    out = tmp_path / "project"
    argv = ["extract", "--model", "tests.test_extract:tiny_lstm", "--corpus", str(corpus), "--layers", "rnn,out",
            "--vocab", str(vocab), "--documents", "line", "--state", "document", "--out", str(out)]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().err
    with open_project(out) as project:
        written = read_dict(out / "vocab.dict")
        assert project.name == "project" and "".join(written[i] for i in project.tokens[:]) == corpus.read_text()
        starts = np.flatnonzero(np.diff(project.meta["doc"].dataset[:], prepend=-1))
    assert starts.tolist() == [0, 7, 10, 11]
    states, model, text = read_states(out), tiny_lstm().eval(), corpus.read_text()
    for start, stop in zip(starts, [*starts[1:], len(text)]):
        ids = Tokenizer.from_file("char", vocab).encode(text[start:stop])
        assert_rows_match(states, forward_states(model, ids), start)

    assert main(argv) == 2
    assert "exists; pass overwrite" in capsys.readouterr().err
    assert main([*argv[:-1], str(tmp_path / "q"), "--corpus", str(tmp_path / "none.txt")]) == 2
    assert "corpus file" in capsys.readouterr().err
    assert main([*argv[:-1], str(tmp_path / "q"), "--model", "tests.test_extract:nothing"]) == 2
    assert "has no attribute" in capsys.readouterr().err
    assert main([*argv[:-1], str(tmp_path / "q"), "--state", "sometimes"]) == 2
    assert "state must be" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


def test_cli_runs_as_a_module_with_weights(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat\n" * 20)
    torch.save(tiny_lstm().state_dict(), tmp_path / "w.pt")
    command = [sys.executable, "-m", "seqvis.cli", "extract", "--model", "tests.test_extract:tiny_lstm",
               "--weights", str(tmp_path / "w.pt"), "--corpus", str(corpus), "--layers", "rnn",
               "--tokenizer", "word", "--state", "window:6", "--out", str(tmp_path / "p"), "--name", "cats"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert "extract states" in done.stderr and "Traceback" not in done.stderr
    with open_project(tmp_path / "p") as project:
        assert project.name == "cats" and project.vocab == ["cat", "mat", "on", "sat", "the"]
        assert project.layers["rnn.l1.c"].dataset.shape == (120, 10)
        assert project.extra["source"] == {"corpus": ["corpus.txt"], "tokenizer": "word", "documents": "file",
                                           "model": "tests.test_extract:tiny_lstm", "weights": "w.pt"}


def test_extract_corpus_never_replaces_a_folder_holding_its_inputs(tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    (project / "corpus.txt").write_text("abcabc")
    torch.save(tiny_lstm().state_dict(), project / "w.pt")
    for corpus, weights in ((project / "corpus.txt", None), (tmp_path / "c.txt", project / "w.pt")):
        with pytest.raises(ValueError, match="lies inside out_dir"):
            extract_corpus(project, model="tests.test_extract:tiny_lstm", weights=weights, corpus=[corpus],
                           layers=["rnn"], overwrite=True)
    assert sorted(p.name for p in project.iterdir()) == ["corpus.txt", "w.pt"]
