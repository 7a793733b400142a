"""Projects on disk: find the project folders of a data folder and open them read-only.

A project is a folder holding a description file and the data it names:

- `seqvis.yml`: seqvis's own format, one schema with a `kind` (tokens | seq2seq | units, see `KINDS`).
- `lstm.yml`: an LSTMVis folder, read as LSTMVis itself reads it (sections `files`, `word_sequence`, `states`,
  `meta`; every `file:` names a key of `files`). Layers are named after their type and layer number, with
  `state` written `states` as in LSTMVis's own dataset names: `{type: state, layer: 1}` is "states1",
  `{type: output, layer: 2}` is "output2", `{type: cell, layer: 1}` is "cell1". A second entry that would get
  a name already taken is named by LSTMVis's source id instead, "<files key>::<dataset path>".

When both files are present, `seqvis.yml` wins. HDF5 files are opened read-only, one handle per file shared by
its datasets, and datasets stay on disk: only dictionaries and label lists are read when a project opens.
"""
from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import h5py
import yaml

from seqvis.vocab import parse_dict

SEQVIS_FILE = "seqvis.yml"
LSTMVIS_FILE = "lstm.yml"
FORMAT_VERSION = 1
TRANSFORMS = ("tanh", "none")
META_TYPES = ("discrete", "scalar", "wordvec")

_REQUIRED = object()
_DOTTED = re.compile(r"\w+(\.\w+)*")
_FACTORY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_RANGE_TEXT = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*\.\.\.\s*(-?\d+(?:\.\d+)?)\s*")


class ProjectError(ValueError):
    """A project folder that cannot be opened; the message names the file (and the dataset) at fault."""


class _Section:
    """A mapping read from a description file, with where it came from, so every complaint names file and key."""

    def __init__(self, data: object, where: str):
        if not isinstance(data, dict):
            raise ProjectError(f"{where}: expected a mapping, found {type(data).__name__}")
        self.data, self.where = data, where

    def fail(self, message: str) -> ProjectError:
        return ProjectError(f"{self.where}: {message}")

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def keys(self) -> list[str]:
        return list(self.data)

    def get(self, key: str, default: Any = _REQUIRED) -> Any:
        if key in self.data and self.data[key] is not None:
            return self.data[key]
        if default is _REQUIRED:
            raise self.fail(f"missing key '{key}'")
        return default

    def string(self, key: str, default: Any = _REQUIRED) -> str:
        value = self.get(key, default)
        if value is not default and (not isinstance(value, str) or not value):
            raise self.fail(f"'{key}' must be a non-empty string, found {value!r}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(f"'{key}' must be true or false, found {value!r}")
        return value

    def choice(self, key: str, options: tuple[str, ...], default: Any = _REQUIRED) -> str:
        value = self.get(key, default)
        if value not in options:
            raise self.fail(f"'{key}' must be one of {', '.join(options)}, found {value!r}")
        return value

    def child(self, key: str) -> str:
        """Where the value under `key` is: "seqvis.yml layers", "lstm.yml meta.pos.vis"."""
        return f"{self.where}.{key}" if " " in self.where else f"{self.where} {key}"

    def section(self, key: str, default: Any = _REQUIRED) -> _Section:
        return _Section(self.get(key, default), self.child(key))

    def sections(self, key: str) -> list[_Section]:
        """The non-empty list under `key`, each item a mapping."""
        items = self.get(key)
        if not isinstance(items, list) or not items:
            raise self.fail(f"'{key}' must be a non-empty list, found {items!r}")
        return [_Section(item, f"{self.child(key)}[{i}]") for i, item in enumerate(items)]

    def named_sections(self, key: str) -> Iterator[tuple[str, _Section]]:
        """The optional mapping of names to mappings under `key`."""
        named = self.section(key, {})
        for name, item in named.data.items():
            yield str(name), named.section(name)

    def only(self, allowed: set[str]) -> None:
        """Reject keys outside `allowed`, so that a typo is reported instead of silently ignored."""
        unknown = sorted(set(map(str, self.data)) - allowed)
        if unknown:
            raise self.fail(f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")


class _Folder:
    """A project folder: resolves names inside it, reads dictionaries, shares one read-only HDF5 handle per file."""

    def __init__(self, path: Path):
        self.path = path
        self._handles: dict[Path, h5py.File] = {}

    def inside(self, name: object, where: str) -> Path:
        """`name` as a path inside the folder; a name that climbs out of it is refused."""
        if not isinstance(name, str) or not name:
            raise ProjectError(f"{where}: expected a file name, found {name!r}")
        normal = os.path.normpath(name)
        if os.path.isabs(normal) or normal.split(os.sep)[0] == os.pardir:
            raise ProjectError(f"{where}: {name!r} points outside the project folder")
        return self.path / normal

    def file(self, name: object, where: str) -> Path:
        path = self.inside(name, where)
        if not path.is_file():
            raise ProjectError(f"{name}: file not found ({where})")
        return path

    def folder(self, name: object, where: str) -> Path:
        path = self.inside(name, where)
        if not path.is_dir():
            raise ProjectError(f"{name}: folder not found ({where})")
        return path

    def dataset(self, name: object, path: object, where: str) -> h5py.Dataset:
        """The dataset `path` of the HDF5 file `name`, opened read-only and left on disk."""
        file = self.file(name, where)
        if not isinstance(path, str) or not path:
            raise ProjectError(f"{where}: expected a dataset path in {name}, found {path!r}")
        handle = self._handles.get(file)
        if handle is None:
            try:
                handle = h5py.File(file, "r")
            except OSError as error:
                raise ProjectError(f"{name}: not a readable HDF5 file ({error}) ({where})") from error
            self._handles[file] = handle
        node = handle.get(path)
        if not isinstance(node, h5py.Dataset):
            raise ProjectError(f"{name}: no dataset '{path}' ({where})")
        return node

    def vocabulary(self, name: object, where: str, *, escaped: bool) -> list[str]:
        """A dictionary file of "word id" lines as a list indexed by id; ids nobody uses map to "".

        seqvis writes words `escaped` (a space as \\s, see seqvis.vocab); LSTMVis's dictionaries hold raw words."""
        path = self.file(name, where)
        try:
            return parse_dict(path.read_text(encoding="utf-8", errors="replace"), str(name), escaped=escaped)
        except OSError as error:
            raise ProjectError(f"{name}: cannot be read ({error}) ({where})") from error
        except ValueError as error:
            raise ProjectError(f"{error} ({where})") from None

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()


def _label(dataset: h5py.Dataset, folder: Path) -> str:
    """How errors name a dataset: its file relative to the project folder, and its path inside the file."""
    return f"{os.path.relpath(dataset.file.filename, folder)}: dataset '{dataset.name.lstrip('/')}'"


def _check(dataset: h5py.Dataset, folder: Path, role: str, *, kinds: str, ndims: tuple[int, ...],
           rows: int | None = None) -> None:
    """Refuse a dataset whose dtype kind, number of dimensions or row count does not fit its `role`."""
    label = _label(dataset, folder)
    if dataset.dtype.kind not in kinds:
        wanted = {"iu": "integers", "f": "floats", "iuf": "numbers"}[kinds]
        raise ProjectError(f"{label} ({role}) must hold {wanted}, found {dataset.dtype}")
    if dataset.ndim not in ndims:
        wanted = " or ".join({1: "[N]", 2: "[N, k]"}[ndim] for ndim in ndims)
        raise ProjectError(f"{label} ({role}) must be shaped {wanted}, found shape {dataset.shape}")
    if rows is not None and dataset.shape[0] != rows:
        raise ProjectError(f"{label} ({role}) has {dataset.shape[0]} rows but the token sequence has {rows}")


def _value_range(value: object, where: str) -> tuple[float, float] | None:
    """A range as [low, high] (or LSTMVis's "low...high" text); None when not given."""
    if value is None:
        return None
    if isinstance(value, str) and (match := _RANGE_TEXT.fullmatch(value)):
        value = [float(match.group(1)), float(match.group(2))]
    if (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value) and value[0] <= value[1]):
        return float(value[0]), float(value[1])
    raise ProjectError(f"{where}: range must be [low, high] with low <= high, found {value!r}")


@dataclass(eq=False)
class Layer:
    """One layer's states, a float [N, U] dataset left on disk, and how its values are shown (tanh or as-is)."""

    name: str
    dataset: h5py.Dataset
    transform: str = "tanh"
    unsigned: bool = False

    @property
    def units(self) -> int:
        return int(self.dataset.shape[1])


@dataclass(eq=False)
class MetaTrack:
    """A per-token annotation: discrete ids (named by `labels`), scalars (in `range`), or top-k token ids."""

    name: str
    type: str
    dataset: h5py.Dataset
    labels: list[str] | None = None
    range: tuple[float, float] | None = None


@dataclass(frozen=True)
class ModelSpec:
    """How to rebuild a model: a factory "package.module:function" and the weights file it loads."""

    factory: str
    weights: Path
    weights_bytes: int

    def summary(self) -> dict[str, Any]:
        return {"factory": self.factory, "weights": self.weights.name, "weights_bytes": self.weights_bytes}


class Project(ABC):
    """An opened project folder; close it (or use it in a `with` block) to release its files."""

    kind: ClassVar[str]
    keys: ClassVar[frozenset[str]] = frozenset({"seqvis", "kind", "name", "description", "extra"})

    def __init__(self, *, name: str, description: str, folder: _Folder, format: str, extra: dict):
        self.name, self.description, self.format, self.extra = name, description, format, extra
        self.path = folder.path
        self._folder = folder

    @classmethod
    @abstractmethod
    def from_seqvis(cls, config: _Section, folder: _Folder) -> Project:
        """Build the project from a checked `seqvis.yml` (each kind reads its own keys)."""

    @staticmethod
    def _common_arguments(config: _Section, folder: _Folder) -> dict[str, Any]:
        """The keys every seqvis.yml has, as constructor arguments."""
        extra = config.get("extra", {})
        if not isinstance(extra, dict):
            raise config.fail(f"'extra' must be a mapping, found {extra!r}")
        return dict(name=config.string("name", folder.path.name), description=config.string("description", ""),
                    folder=folder, format="seqvis", extra=extra)

    def summary(self) -> dict[str, Any]:
        """What the project index shows, JSON-ready."""
        return {"kind": self.kind, "name": self.name, "description": self.description, "format": self.format,
                "extra": self.extra}

    def close(self) -> None:
        self._folder.close()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} at {self.path}>"


class TokenProject(Project):
    """One long token sequence with per-layer state matrices and per-token meta tracks (the LSTMVis data)."""

    kind = "tokens"
    keys = Project.keys | {"tokens", "vocab", "layers", "meta"}

    def __init__(self, *, tokens: h5py.Dataset, vocab: list[str], layers: dict[str, Layer],
                 meta: dict[str, MetaTrack], **common: Any):
        super().__init__(**common)
        self.tokens, self.vocab, self.layers, self.meta = tokens, vocab, layers, meta
        _check(tokens, self.path, "token ids", kinds="iu", ndims=(1,))
        n = len(self)
        for layer in layers.values():
            _check(layer.dataset, self.path, f"layer '{layer.name}'", kinds="f", ndims=(2,), rows=n)
        for track in meta.values():
            role = f"meta '{track.name}'"
            if track.type == "wordvec":
                _check(track.dataset, self.path, role, kinds="iu", ndims=(1, 2), rows=n)
            else:
                _check(track.dataset, self.path, role, kinds="iu" if track.type == "discrete" else "iuf",
                       ndims=(1,), rows=n)

    @classmethod
    def from_seqvis(cls, config: _Section, folder: _Folder) -> TokenProject:
        source = config.section("tokens")
        source.only({"file", "path"})
        tokens = folder.dataset(source.get("file"), source.get("path"), source.where)
        vocab = folder.vocabulary(config.get("vocab"), f"{config.where} vocab", escaped=True)
        layers: dict[str, Layer] = {}
        for entry in config.sections("layers"):
            entry.only({"name", "file", "path", "transform", "unsigned"})
            name = entry.string("name")
            if name in layers:
                raise entry.fail(f"layer name '{name}' is used twice")
            layers[name] = Layer(name, folder.dataset(entry.get("file"), entry.get("path"), entry.where),
                                 transform=entry.choice("transform", TRANSFORMS, "tanh"),
                                 unsigned=entry.flag("unsigned", False))
        meta = {}
        for name, entry in config.named_sections("meta"):
            entry.only({"file", "path", "type", "labels", "dict", "range"})
            meta[name] = MetaTrack(name, entry.choice("type", META_TYPES),
                                   folder.dataset(entry.get("file"), entry.get("path"), entry.where),
                                   labels=cls._labels(entry, folder, vocab),
                                   range=_value_range(entry.get("range", None), entry.where))
        return cls(tokens=tokens, vocab=vocab, layers=layers, meta=meta, **cls._common_arguments(config, folder))

    @staticmethod
    def _labels(entry: _Section, folder: _Folder, vocab: list[str]) -> list[str] | None:
        """A seqvis meta track's names for its values: the vocabulary for wordvec, else `labels` or `dict`."""
        if entry.get("type") == "wordvec":
            if "labels" in entry or "dict" in entry:
                raise entry.fail("a wordvec track holds token ids and uses the project vocab: drop labels/dict")
            return vocab
        if "labels" in entry and "dict" in entry:
            raise entry.fail("give either 'labels' or 'dict', not both")
        if "dict" in entry:
            return folder.vocabulary(entry.get("dict"), entry.where, escaped=True)
        labels = entry.get("labels", None)
        if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
            raise entry.fail(f"'labels' must be a list of strings, found {labels!r}")
        return labels

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def words(self, start: int, stop: int) -> list[str]:
        """The tokens at positions [start, stop) as words; reads only that slice."""
        for argument, value in (("start", start), ("stop", stop)):
            if isinstance(value, bool) or not hasattr(value, "__index__"):
                raise TypeError(f"words: {argument} must be an integer, found {value!r}")
        if not 0 <= start <= stop <= len(self):
            raise ValueError(f"words: need 0 <= start <= stop <= {len(self)}, found start={start}, stop={stop}")
        ids = self.tokens[start:stop].tolist()
        unknown = next((i for i, token in enumerate(ids) if not 0 <= token < len(self.vocab)), None)
        if unknown is not None:
            raise ProjectError(f"{_label(self.tokens, self.path)}: token id {ids[unknown]} at position "
                               f"{start + unknown} is not in the vocabulary ({len(self.vocab)} ids)")
        return [self.vocab[token] for token in ids]

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "tokens": len(self), "vocab": len(self.vocab),
                "layers": [{"name": layer.name, "units": layer.units, "transform": layer.transform,
                            "unsigned": layer.unsigned} for layer in self.layers.values()],
                "meta": [{"name": track.name, "type": track.type} for track in self.meta.values()]}


def _model(config: _Section, folder: _Folder) -> ModelSpec:
    section = config.section("model")
    section.only({"factory", "weights"})
    factory = section.string("factory")
    if not _FACTORY.fullmatch(factory):
        raise section.fail(f"'factory' must look like 'package.module:function', found {factory!r}")
    weights = folder.file(section.get("weights"), f"{section.where} weights")
    return ModelSpec(factory, weights, weights.stat().st_size)


def _named_files(config: _Section, folder: _Folder) -> dict[str, Path]:
    named = config.section("files", {})
    return {str(name): folder.file(file, named.child(name)) for name, file in named.data.items()}


class Seq2SeqProject(Project):
    """An attention encoder-decoder to load and run; the translate view gives it its meaning."""

    kind = "seq2seq"
    keys = Project.keys | {"model", "files"}

    def __init__(self, *, model: ModelSpec, files: dict[str, Path], **common: Any):
        super().__init__(**common)
        self.model, self.files = model, files

    @classmethod
    def from_seqvis(cls, config: _Section, folder: _Folder) -> Seq2SeqProject:
        return cls(model=_model(config, folder), files=_named_files(config, folder),
                   **cls._common_arguments(config, folder))

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "model": self.model.summary(), "files": sorted(self.files)}


class UnitsProject(Project):
    """A CNN, the layers to dissect (dotted module names) and a concept dataset in the Broden layout."""

    kind = "units"
    keys = Project.keys | {"model", "dataset", "layers", "files"}

    def __init__(self, *, model: ModelSpec, dataset: Path, layers: list[str], files: dict[str, Path],
                 **common: Any):
        super().__init__(**common)
        self.model, self.dataset, self.layers, self.files = model, dataset, layers, files

    @classmethod
    def from_seqvis(cls, config: _Section, folder: _Folder) -> UnitsProject:
        model = _model(config, folder)
        dataset = folder.folder(config.get("dataset"), f"{config.where} dataset")
        folder.file(os.path.normpath(os.path.join(config.get("dataset"), "index.csv")),
                    f"{config.where} dataset (Broden layout)")
        layers = config.get("layers")
        if not (isinstance(layers, list) and layers and all(isinstance(x, str) and _DOTTED.fullmatch(x)
                                                             for x in layers)):
            raise config.fail(f"'layers' must be a non-empty list of dotted module names, found {layers!r}")
        return cls(model=model, dataset=dataset, layers=layers, files=_named_files(config, folder),
                   **cls._common_arguments(config, folder))

    @cached_property
    def images(self) -> int:
        """How many images the dataset's index.csv lists (counted once, on first use)."""
        with open(self.dataset / "index.csv", encoding="utf-8", errors="replace") as index:
            return max(0, sum(1 for line in index if line.strip()) - 1)

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "model": self.model.summary(),
                "dataset": os.path.relpath(self.dataset, self.path), "images": self.images,
                "layers": [{"name": name} for name in self.layers], "files": sorted(self.files)}


KINDS: dict[str, type[Project]] = {cls.kind: cls for cls in (TokenProject, Seq2SeqProject, UnitsProject)}


def _read_description(folder: _Folder, file_name: str) -> _Section:
    try:
        data = yaml.safe_load((folder.path / file_name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ProjectError(f"{file_name}: cannot be read ({error})") from error
    except yaml.YAMLError as error:
        mark, problem = getattr(error, "problem_mark", None), getattr(error, "problem", None) or error
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ProjectError(f"{file_name}: invalid YAML{where}: {problem}") from error
    return _Section(data, file_name)


def _open_seqvis(folder: _Folder) -> Project:
    config = _read_description(folder, SEQVIS_FILE)
    version = config.get("seqvis")
    if version != FORMAT_VERSION:
        raise config.fail(f"format version 'seqvis: {version!r}' is not supported (expected {FORMAT_VERSION})")
    kind = config.get("kind")
    if kind not in KINDS:
        raise config.fail(f"unknown kind {kind!r} (known: {', '.join(sorted(KINDS))})")
    project_class = KINDS[kind]
    config.only(set(project_class.keys))
    return project_class.from_seqvis(config, folder)


def _open_lstmvis(folder: _Folder) -> TokenProject:
    """An LSTMVis folder as LSTMVis reads it; `file:` entries name keys of the `files` section."""
    config = _read_description(folder, LSTMVIS_FILE)
    files = config.section("files")

    def dataset(entry: _Section, default_key: object = _REQUIRED) -> h5py.Dataset:
        return folder.dataset(file_of(entry, "file", default_key), entry.get("path"), entry.where)

    def file_of(entry: _Section, key: str, default: object = _REQUIRED) -> str:
        reference = entry.get(key, default)
        if not isinstance(reference, str) or not isinstance(files.get(reference, None), str):
            raise entry.fail(f"'{key}: {reference}' is not a key of the files section "
                             f"(keys: {', '.join(map(str, files.keys()))})")
        return files.get(reference)

    sequence = config.section("word_sequence")
    tokens = dataset(sequence)
    vocab = folder.vocabulary(file_of(sequence, "dict_file"), sequence.where, escaped=False)

    states = config.section("states")
    layers: dict[str, Layer] = {}
    for entry in states.sections("types"):
        file_key = entry.get("file", states.get("file", None))
        source = f"{file_key}::{entry.get('path')}"
        kind = entry.string("type")
        name = f"{'states' if kind == 'state' else kind}{entry.get('layer')}"
        if name in layers:
            name = source
        if name in layers:
            raise entry.fail(f"the states {source} are listed twice")
        layers[name] = Layer(name, dataset(entry, file_key), transform=entry.choice("transform", TRANSFORMS, "tanh"),
                             unsigned=entry.flag("unsigned", False))

    meta: dict[str, MetaTrack] = {}
    for name, entry in config.named_sections("meta"):
        if entry.get("index", "self") != "self":
            raise entry.fail(f"only per-token tracks (index: self) are supported, found index {entry.get('index')!r}")
        vis = entry.section("vis", {})
        labels = folder.vocabulary(file_of(entry, "dict"), entry.where, escaped=False) if "dict" in entry else None
        entry_type = entry.choice("type", ("general", "wordvec"), "general")
        if entry_type == "wordvec" or vis.get("type", None) == "wordvec":
            track_type, labels = "wordvec", labels or vocab
        else:
            track_type = vis.choice("type", ("discrete", "scalar"), "discrete" if labels else "scalar")
        vis_range = vis.get("range", None)
        if vis_range == "dict" and labels is None:
            raise vis.fail("range: dict needs a 'dict' entry in the track")
        meta[name] = MetaTrack(name, track_type, dataset(entry), labels=labels,
                               range=None if vis_range == "dict" else _value_range(vis_range, vis.where))

    return TokenProject(tokens=tokens, vocab=vocab, layers=layers, meta=meta,
                        name=str(config.get("name", folder.path.name)), description=str(config.get("description", "")),
                        folder=folder, format="lstmvis", extra={})


def open_project(folder: str | os.PathLike[str]) -> Project:
    """Open the project in `folder` (seqvis.yml, else lstm.yml); raises ProjectError naming the file at fault."""
    path = Path(folder)
    if not path.is_dir():
        raise ProjectError(f"{path}: not a folder")
    files = _Folder(path)
    try:
        if (path / SEQVIS_FILE).is_file():
            return _open_seqvis(files)
        if (path / LSTMVIS_FILE).is_file():
            return _open_lstmvis(files)
        raise ProjectError(f"{path}: neither {SEQVIS_FILE} nor {LSTMVIS_FILE} found")
    except Exception:
        files.close()
        raise


def discover(data_dir: str | os.PathLike[str]) -> tuple[dict[str, Project], dict[str, str]]:
    """Open every immediate subfolder of `data_dir` that has a description file.

    Returns the projects by name and, by folder name, why the others failed. Folders are visited in name order;
    when a name is taken already, the later project is called "<name>@<folder>" so that both stay reachable.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"data_dir {str(root)!r} is not a folder")
    projects: dict[str, Project] = {}
    errors: dict[str, str] = {}
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        if not ((folder / SEQVIS_FILE).is_file() or (folder / LSTMVIS_FILE).is_file()):
            continue
        try:
            project = open_project(folder)
        except ProjectError as error:
            errors[folder.name] = str(error)
            continue
        if project.name in projects:
            project.name = f"{project.name}@{folder.name}"
        if project.name in projects:
            errors[folder.name] = f"project name {project.name!r} is taken"
            project.close()
            continue
        projects[project.name] = project
    return projects, errors
