"""The translate demo: date pairs from babel, the tiny build end to end (train, measure, store states, reopen),
and the project's factory."""
from __future__ import annotations

import datetime
import shutil

import h5py
import numpy as np
import pytest
import torch

from seqvis.demo import DEMOS
from seqvis.demo import translate as demo
from seqvis.projects import ProjectError, Seq2SeqProject, open_project
from seqvis.translate import greedy, source_ids
from seqvis.translate.service import Translator
from seqvis.vocab import read_dict, write_dict
from tests.test_translate import one_thread  # noqa: F401 (a fixture)


def test_pairs_reorder_and_rewrite_dates():
    day = datetime.date(2024, 3, 5)
    assert demo.date_pair(day, "fr", "full") == (["<fr>", "Tuesday", ",", "March", "5", ",", "2024"],
                                                 ["mardi", "5", "mars", "2024"])
    assert demo.date_pair(day, "de", "full")[1] == ["Dienstag", ",", "5.", "März", "2024"]
    assert demo.date_pair(day, "de", "medium") == (["<de>", "Mar", "5", ",", "2024"], ["5.", "März", "2024"])
    assert demo.detokenize(demo.tokenize("Tuesday, March 5, 2024")) == "Tuesday, March 5, 2024"


def test_held_out_days_never_reach_training():
    rng = np.random.default_rng(1)
    train, held_out = demo.sample(False, 3000, rng), demo.sample(True, 300, rng)
    assert all((day - demo.FIRST_DAY).days % demo.HELD_OUT_EVERY == 0 for day, _, _ in held_out)
    assert all((day - demo.FIRST_DAY).days % demo.HELD_OUT_EVERY != 0 for day, _, _ in train)
    assert {language for _, language, _ in train} == set(demo.LANGUAGES)
    assert {form for _, _, form in train} == set(demo.FORMATS)
    assert all(demo.FIRST_DAY <= day <= demo.LAST_DAY for day, _, _ in train + held_out)


@pytest.fixture(scope="module")
def tiny_project(tiny_demo):
    assert "translate" in DEMOS
    with open_project(tiny_demo("translate")) as project:
        yield project


def test_tiny_build_is_a_seq2seq_project_the_service_opens(tiny_project, tmp_path):
    project = tiny_project
    assert isinstance(project, Seq2SeqProject) and project.name == "dates-en-fr-de"
    assert set(project.files) == {"source_vocab", "target_vocab", "states"}
    assert project.model.factory == "seqvis.demo.translate:load_adapter"
    service = Translator(project, tmp_path)
    model = service.adapter.model
    assert (model.encoder.hidden_size, model.decoder.hidden_size) == (demo.TINY.encoder, demo.TINY.decoder)
    example = project.extra["examples"][0]
    data = service.translate(example, beam=3, n_best=2, max_length=10)
    assert data["source"]["tokens"] == demo.tokenize(example) and len(data["hypotheses"]) == 2
    assert service.info()["has_attention"]


def test_tiny_training_learns_and_is_measured(tiny_project):
    extra = tiny_project.extra
    curve = extra["training"]["loss_per_word"]
    assert extra["training"]["steps"] > 0 and curve[-1] < curve[0] - 1.0
    held_out = extra["held_out"]
    assert held_out["pairs"] == demo.TINY.test_pairs and 0 <= held_out["exact_match"] <= 1
    assert f"held-out exact match {100 * held_out['exact_match']:.1f}%" in tiny_project.description


def test_stored_states_are_the_models_states_without_padding(tiny_project, tmp_path):
    adapter = Translator(tiny_project, tmp_path).adapter
    with h5py.File(tiny_project.files["states"], "r") as f:
        source, target = f["sentences/source"][:], f["sentences/target"][:]
        source_offsets, target_offsets = f["sentences/source_offsets"][:], f["sentences/target_offsets"][:]
        pairs = len(source_offsets) - 1
        assert pairs == demo.TINY.train_pairs == tiny_project.extra["states"]["pairs"]
        for side, offsets in (("encoder", source_offsets), ("decoder", target_offsets)):
            sentence, position = f[f"{side}/sentence"][:], f[f"{side}/position"][:]
            assert f[f"{side}/states"].shape[0] == offsets[-1] == len(sentence)
            assert np.array_equal(sentence, np.repeat(np.arange(pairs), np.diff(offsets)))
            assert np.array_equal(position, np.arange(len(sentence)) - offsets[sentence])
        assert (np.diff(source_offsets) >= 4).all() and (target[target_offsets[1:] - 1] == adapter.eos).all()
        assert adapter.eos not in target[np.setdiff1d(np.arange(len(target)), target_offsets[1:] - 1)]
        for i in (0, 7, pairs - 1):
            ids = source[source_offsets[i]:source_offsets[i + 1]].tolist()
            reference = target[target_offsets[i]:target_offsets[i + 1]].tolist()
            # decoding with the reference forced gives the stored decoder states, encoding the stored encoder ones
            run = greedy(adapter, ids, prefix=reference, max_length=len(reference))
            assert np.allclose(f["encoder/states"][source_offsets[i]:source_offsets[i + 1]], run.encoder_states,
                               atol=1e-5)
            assert np.allclose(f["decoder/states"][target_offsets[i]:target_offsets[i + 1]], run.best.states,
                               atol=1e-5)


def test_factory_refuses_a_dictionary_that_does_not_fit(tiny_project, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(tiny_project.path, folder)
    write_dict(folder / demo.SOURCE_DICT, read_dict(folder / demo.SOURCE_DICT)[:-1])
    with open_project(folder) as copy, pytest.raises(ProjectError, match=r"model.pt: the model has \d+ source words, "
                                                                         r"the source dictionary \d+"):
        demo.load_adapter(copy)


def test_load_adapter_serves_any_size_of_the_architecture(tiny_project, tmp_path):
    folder = tmp_path / "bigger"
    shutil.copytree(tiny_project.path, folder)
    words = (len(read_dict(folder / demo.SOURCE_DICT)), len(read_dict(folder / demo.TARGET_DICT)))
    torch.save(demo.DateTranslator(*words, embedding=5, encoder=7, decoder=11).state_dict(), folder / demo.WEIGHTS_FILE)
    with open_project(folder) as copy:
        adapter = demo.load_adapter(copy)
        result = greedy(adapter, source_ids(adapter, copy.extra["examples"][0]), max_length=4)
    assert result.encoder_states.shape[1] == 14 and result.best.states.shape[1] == 11
