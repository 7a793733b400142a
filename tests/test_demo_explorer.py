"""The explorer demo: per-character tokenize tracks, and the tiny build end to end (train, validate, write, reopen)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import yaml

from seqvis.demo import explorer, pytokens
from seqvis.extract import Tokenizer, extract_corpus, load_model
from seqvis.progress import Progress
from seqvis.projects import TokenProject, open_project
from seqvis.vocab import read_dict

CLASS_CODES = "wikndsco"  # whitespace indent keyword name number(digit) string comment operator
assert len(CLASS_CODES) == len(pytokens.TOKEN_CLASSES)


def rows(source: str, track: str) -> list[str]:
    """One string per physical line (its newline included) with one code per character: a letter for the
    token class (`CLASS_CODES`), the digit of the value for the other tracks."""
    values = pytokens.char_tracks(source)[track]
    assert len(values) == len(source)
    codes = [CLASS_CODES[v] if track == "token_class" else str(v) for v in values]
    out, start = [], 0
    for line in source.splitlines(keepends=True):
        out.append("".join(codes[start:start + len(line)]))
        start += len(line)
    return out


def test_strings_comments_and_numbers():
    source = ("import re  # note (x\n"
              'x = r"a#b" + 0x1F\n'
              'doc = """one\n'
              '   two"""\n')
    assert rows(source, "token_class") == ["kkkkkkwnnwwcccccccccw",
                                           "nwowsssssswowddddw",
                                           "nnnwowsssssss",
                                           "sssssssssw"]
    assert rows(source, "in_string") == ["000000000000000000000",
                                         "000011111100000000",
                                         "0000001111111",
                                         "1111111110"]
    assert rows(source, "in_comment") == ["000000000001111111110",
                                          "000000000000000000",
                                          "0000000000000",
                                          "0000000000"]
    assert set(pytokens.char_tracks(source)["bracket_depth"]) == {0}  # "(" in a comment does not open anything


def test_brackets_and_indentation():
    source = ("def f(a):\n"
              "    if a:\n"
              "        return [a,\n"
              "      (1)]\n"
              "    # back\n"
              "    return {}\n"
              "\n"
              "x = f(2)\n")
    assert rows(source, "token_class") == ["kkkwnonoow",
                                           "iiiikkwnow",
                                           "iiiiiiiikkkkkkwonow",
                                           "iiiiiiodoow",
                                           "iiiiccccccw",
                                           "iiiikkkkkkwoow",
                                           "w",
                                           "nwownodow"]
    assert rows(source, "bracket_depth") == ["0000011100",
                                             "0000000000",
                                             "0000000000000001111",
                                             "11111122210",
                                             "00000000000",
                                             "00000000000110",
                                             "0",
                                             "000001110"]
    # A comment-only or blank line keeps the level of the statement before it (tokenize dedents at the next one).
    assert rows(source, "indent_level") == ["0000000000",
                                            "1111111111",
                                            "2222222222222222222",
                                            "22222222222",
                                            "22222222222",
                                            "11111111111111",
                                            "1",
                                            "000000000"]
    columns = pytokens.char_tracks(source)["column"]
    assert columns[:11].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0]


def test_f_strings_are_one_literal_with_their_replacement_fields():
    source = ('s = f"{a[(1)]}!" + x\n'
              "print(f'{b!r:>{w}}', 2)\n")
    assert rows(source, "token_class") == ["nwowsssssssssssswownw",
                                           "nnnnnosssssssssssssowdow"]
    assert rows(source, "in_string") == ["000011111111111100000",
                                         "000000111111111111100000"]
    assert rows(source, "bracket_depth") == ["000000000000000000000",
                                             "000001111111111111111110"]


@pytest.mark.parametrize("source, problem", [
    ("x = (1,\n    2\n", "EOF in multi-line statement at line 3"),
    ("if x:\n    a\n  b\n", "unindent does not match any outer indentation level at line 3"),
    ('s = "abc\nt = 1\n', "unexpected '\"' at line 1"),
    ('doc = """never closed\n', "EOF in multi-line string at line 1"),
    ("a = 1 $ 2\n", "unexpected '\\$' at line 1"),
    ("x = 1\ny = 1)\n", "'\\)' at line 2 closes no bracket"),
])
def test_source_tokenize_rejects_raises_naming_the_problem(source, problem):
    with pytest.raises(pytokens.UnparsableSource, match=problem):
        pytokens.char_tracks(source)


def test_edge_inputs():
    empty = pytokens.char_tracks("")
    assert all(len(values) == 0 for values in empty.values())
    no_newline = pytokens.char_tracks("x=1")
    assert "".join(CLASS_CODES[v] for v in no_newline["token_class"]) == "nod"
    with pytest.raises(TypeError, match="source must be a str"):
        pytokens.char_tracks(b"x = 1\n")


def test_meta_tracks_are_discrete_ordered_and_labelled():
    source = "f(((([1])))) # c\n" + "".join("    " * k + f"if x{k}:\n" for k in range(8)) + "    " * 8 + "y" * 80 + "\n"
    tracks = pytokens.char_tracks(source)
    meta = pytokens.meta_tracks(tracks)
    assert list(meta) == list(pytokens.TRACKS)
    assert all(track["type"] == "discrete" and track["values"].dtype == np.int32 for track in meta.values())
    assert meta["token_class"]["labels"] == list(pytokens.TOKEN_CLASSES)
    assert meta["in_comment"]["labels"] == ["outside comment", "in comment"]
    assert meta["bracket_depth"]["labels"] == ["0", "1", "2", "3", "4+"]
    assert meta["indent_level"]["labels"] == ["0", "1", "2", "3", "4", "5", "6+"]
    assert meta["column"]["labels"] == ["0", "1-3", "4-7", "8-15", "16-31", "32-47", "48-63", "64-71", "72-79", "80+"]
    # "depth >= k" is "value >= k" up to the top label; deeper brackets share it.
    depth = meta["bracket_depth"]["values"]
    assert depth[:13].tolist() == [0, 1, 2, 3, 4, 4, 4, 4, 4, 3, 2, 1, 0]
    assert np.array_equal(depth >= 2, tracks["bracket_depth"] >= 2)
    level = meta["indent_level"]["values"]
    assert level.max() == 6 and np.array_equal(level >= 6, tracks["indent_level"] >= 6)
    column, exact = meta["column"]["values"], tracks["column"]
    for band, label in enumerate(meta["column"]["labels"]):
        low, _, high = label.rstrip("+").partition("-")
        inside = exact[column == band]
        assert len(inside) and inside.min() == int(low), label
        assert inside.max() == (int(high) if high else int(low) if not label.endswith("+") else exact.max()), label
    with pytest.raises(ValueError, match="missing column"):
        pytokens.meta_tracks({name: values for name, values in tracks.items() if name != "column"})


def test_take_cuts_the_last_file_after_a_line_end(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\ny = 2\n")
    (tmp_path / "b.py").write_text("z = 3\nw = 4\nv = 5\n")
    (tmp_path / "empty.py").write_text("")
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "skipped.py").write_text("t = 0\n")
    corpus = explorer.StdlibCorpus(tmp_path)
    assert list(corpus.sources) == ["a.py", "b.py"]
    assert corpus.take(["a.py", "b.py"], 14) == [("a.py", "x = 1\ny = 2\n"), ("b.py", "z = 3\n")]
    assert corpus.take(["a.py", "b.py"], None) == [("a.py", "x = 1\ny = 2\n"), ("b.py", "z = 3\nw = 4\nv = 5\n")]


def test_annotate_skips_files_tokenize_rejects(tmp_path):
    (tmp_path / "a.py").write_text("x = (1,\n     2)\n")
    (tmp_path / "b.py").write_text('s = "open\n')
    (tmp_path / "c.py").write_text("# c\ny = 3\nz = 4\n")
    corpus = explorer.StdlibCorpus(tmp_path)
    files, tracks, skipped = explorer.annotate(corpus, ["a.py", "b.py", "c.py"], 20, Progress(stream=None))
    assert files == [("a.py", "x = (1,\n     2)\n"), ("c.py", "# c\n")] and skipped == ["b.py"]
    text = "".join(text for _, text in files)
    assert all(len(values) == len(text) for values in tracks.values())
    assert tracks["bracket_depth"].tolist() == pytokens.char_tracks(files[0][1])["bracket_depth"].tolist() + [0] * 4
    assert tracks["in_comment"][-4:].tolist() == [1, 1, 1, 0]
    with pytest.raises(ValueError, match="none of the 1 files given could be tokenized"):
        explorer.annotate(corpus, ["b.py"], None, Progress(stream=None))


@pytest.mark.parametrize("seconds, stopped_by", [(600.0, "steps"), (1e-9, "time")])
def test_training_stops_at_steps_or_time_and_counts_real_steps(seconds, stopped_by):
    plan = dataclasses.replace(explorer.TINY, embedding=4, hidden=8, batch=2, bptt=8, steps=6, seconds=seconds)
    ids = np.random.default_rng(0).integers(0, len(explorer.VOCAB), 200)
    progress = Progress(stream=None)
    record = explorer.train(explorer.CharLSTM.of_plan(plan), ids, plan, progress)
    assert record["stopped_by"] == stopped_by and progress.snapshot()["done"] == record["steps"]
    assert record["steps"] == (6 if stopped_by == "steps" else 0)
    assert record["chars_seen"] == record["steps"] * 2 * 8
    with pytest.raises(ValueError, match="too short for 2 streams of 8-char windows"):
        explorer.train(explorer.CharLSTM.of_plan(plan), ids[:16], plan, progress)


@pytest.fixture(scope="module")
def tiny_project(tiny_demo):
    with open_project(tiny_demo("explorer")) as project:
        yield project


def test_tiny_build_writes_aligned_layers_and_meta(tiny_project):
    project = tiny_project
    assert isinstance(project, TokenProject) and project.name == "stdlib-charlm"
    n = len(project)
    assert n >= explorer.TINY.state_chars
    assert {name: layer.dataset.shape for name, layer in project.layers.items()} == {
        f"lstm.l{k}.{kind}": (n, explorer.TINY.hidden) for k in (0, 1) for kind in ("h", "c")}
    assert set(project.meta) == {"doc", *pytokens.TRACKS}

    # The tokens are the listed stdlib files, in order, and the meta tracks are their tokenize tracks.
    states = project.extra["states_corpus"]
    corpus = explorer.StdlibCorpus()
    files = corpus.take(states["files"], explorer.TINY.state_chars)
    assert [name for name, _ in files] == states["files"] and states["held_out_files"] == len(files)
    text = "".join(text for _, text in files)
    assert read_dict(project.path / "vocab.dict") == list(explorer.VOCAB)
    assert np.array_equal(project.tokens[:], Tokenizer("char", list(explorer.VOCAB)).encode(text))
    lengths = [len(text) for _, text in files]
    assert np.array_equal(project.meta["doc"].dataset[:], np.repeat(np.arange(len(files)), lengths))
    expected = pytokens.meta_tracks({name: np.concatenate([pytokens.char_tracks(corpus.sources[file])[name][:length]
                                                           for (file, _), length in zip(files, lengths)])
                                     for name in pytokens.TRACKS})
    for name, track in expected.items():
        assert project.meta[name].type == "discrete" and project.meta[name].labels == track["labels"], name
        assert np.array_equal(project.meta[name].dataset[:], track["values"]), name


def test_tiny_states_are_the_saved_model_run_on_the_tokens(tiny_project):
    project = tiny_project
    model = load_model(project.extra["model"]["factory"], project.path / project.extra["model"]["weights"])
    ids = torch.from_numpy(project.tokens[:300].astype(np.int64))[None]
    with torch.no_grad():
        out, (h, c) = model.lstm(model.embed(ids))  # the first stream starts from a zero state at token 0
    assert np.allclose(project.layers["lstm.l1.h"].dataset[:300], out[0].numpy(), atol=1e-5)
    last = model.lstm(model.embed(ids[:, :1]))[1][1][0, 0]  # layer 0's cell state after the first token
    assert np.allclose(project.layers["lstm.l0.c"].dataset[0], last.detach().numpy(), atol=1e-5)


def test_seqvis_extract_with_the_saved_model_reproduces_the_states(tiny_project, tmp_path):
    project = tiny_project
    n = project.extra["extraction"]["resets"][1]  # the first stream of the build, carried from a zero state
    assert n >= 256
    source = tmp_path / "prefix.py"
    source.write_text("".join(project.words(0, n)), encoding="utf-8")  # ASCII stdlib text: no "<unk>"
    model = project.extra["model"]
    folder = extract_corpus(tmp_path / "again", model=model["factory"], weights=project.path / model["weights"],
                            vocab=project.path / "vocab.dict", corpus=[source], layers=["lstm"], batch_size=1)
    with open_project(folder) as again:
        assert np.array_equal(again.tokens[:], project.tokens[:n])
        for name, layer in project.layers.items():
            assert np.allclose(again.layers[name].dataset[:], layer.dataset[:n], atol=1e-5), name


def test_tiny_training_learns(tiny_project):
    extra = tiny_project.extra
    curve = extra["training"]["loss_bits_per_char"]
    assert extra["training"]["steps"] > 0 and len(curve) >= 10
    assert curve[-1] < curve[0] - 1.0  # bits per character fall well below where training started
    bits = extra["validation"]["bits_per_char"]
    assert 0 < bits < np.log2(len(explorer.VOCAB))  # better than guessing uniformly on held-out files
    assert f"{bits:.2f} bits per character" in tiny_project.description
    described = yaml.safe_load((tiny_project.path / "seqvis.yml").read_text())
    assert described["extra"]["extraction"]["state"] == "carry"


def test_factory_builds_the_full_architecture():
    model = explorer.factory()
    assert (model.lstm.num_layers, model.lstm.hidden_size, model.lstm.batch_first) == (2, 256, True)
    logits, (h, c) = model(torch.zeros(1, 5, dtype=torch.long))
    assert logits.shape == (1, 5, len(explorer.VOCAB)) and h.shape == c.shape == (2, 1, 256)
