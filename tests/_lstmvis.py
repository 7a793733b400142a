"""Write a small project folder in LSTMVis's own layout, as its tools and Lua extraction scripts leave them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

LSTM_YML = """\
name: toy lstmvis  # project name
description: an LSTMVis folder written by the tests

files: # assign files to reference name
  states: states.hdf5 # HDF5 files have to end with .h5 or .hdf5 !!!
  train: train.hdf5 # word ids of training set
  words: train.dict # dict files have to end with .dict !!
  pos: pos.hdf5
  pos_dict: pos.dict
  extra: extra.hdf5

word_sequence: # defines the word sequence
  file: train # HDF5 file
  path: words # path to table in HDF5
  dict_file: words # dictionary to map IDs from HDF5 to words

states: # section to define which states of your model you want to look at
  file: states # HDF5 files containing the state for each position
  types: [
    {type: state, layer: 1, path: states1},
    {type: output, layer: 1, path: output1},
    {type: state, layer: 2, path: states2, unsigned: true},
    {type: output, layer: 2, path: output2, transform: none},
    {file: extra, type: state, layer: 2, path: cells2}
  ]

meta:
  part_of_speech:
    file: pos
    path: pos
    dict: pos_dict
    vis:
      type: discrete
      range: dict
  depth:
    file: extra
    path: depth
    vis:
      type: scalar
      range: 0...4
  prediction:
    file: extra
    path: top3
    type: wordvec
    dict: words
    vis:
      type: discrete
"""

VOCAB = ["<s>", "<unk>", "</s>", "the", "cat", "sat", "on", "a", "mat", "."]
TAGS = ["DT", "NN", "VBD", "IN", "."]


@dataclass
class LSTMVisFolder:
    """What was written, to compare with what the project reads back."""

    path: Path
    words: list[str]
    states: dict[str, np.ndarray]
    tags: list[str]


def make_lstmvis_folder(folder: Path, *, n_tokens: int = 240, units: int = 6, seed: int = 0) -> LSTMVisFolder:
    """An LSTMVis folder: lstm.yml, states.hdf5 (states1/output1/...), train.hdf5 ids from 1, train.dict, meta."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ids = rng.integers(3, len(VOCAB), n_tokens) + 1  # LSTMVis dictionaries count from 1
    with h5py.File(folder / "train.hdf5", "w") as f:
        f["words"] = ids.astype(np.int64)
    states = {name: rng.standard_normal((n_tokens, units)).astype(np.float32)
              for name in ("states1", "output1", "states2", "output2")}
    with h5py.File(folder / "states.hdf5", "w") as f:
        for name, values in states.items():
            f[name] = values
    tag_ids = rng.integers(0, len(TAGS), n_tokens) + 1
    with h5py.File(folder / "pos.hdf5", "w") as f:
        f["pos"] = tag_ids.astype(np.int64)
    states["cells2"] = rng.standard_normal((n_tokens, units)).astype(np.float32)
    with h5py.File(folder / "extra.hdf5", "w") as f:
        f["cells2"] = states["cells2"]
        f["depth"] = rng.integers(0, 5, n_tokens).astype(np.float32)
        f["top3"] = rng.integers(1, len(VOCAB) + 1, (n_tokens, 3)).astype(np.int64)
    (folder / "train.dict").write_text("".join(f"{word} {i}\n" for i, word in enumerate(VOCAB, 1)))
    (folder / "pos.dict").write_text("".join(f"{tag} {i}\n" for i, tag in enumerate(TAGS, 1)))
    (folder / "lstm.yml").write_text(LSTM_YML)
    return LSTMVisFolder(folder, [VOCAB[i - 1] for i in ids], states, [TAGS[i - 1] for i in tag_ids])
