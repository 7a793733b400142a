"""Run a user's PyTorch model over a token corpus and write a seqvis token-states project.

Model convention: `model(ids)` takes a LongTensor `[batch, time]` of vocabulary ids (on the device of
the model's parameters) and may return anything; its output is not used. Layers are dotted module
names, as `model.named_modules()` lists them:

- nn.LSTM / nn.GRU / nn.RNN: every stacked layer and direction becomes a project layer, the hidden
  state `<name>.l<k>.h` and for nn.LSTM the cell state `<name>.l<k>.c`, with `.reverse` appended for
  the second direction of a bidirectional module. nn.LSTM returns h of its last layer only, so
  `recurrent_states` steps the module with its own weights; the first call is checked against the
  module's own output.
- any other module: its output `[batch, time, units...]` (the first element when it returns a tuple)
  is one layer; trailing dimensions are flattened into units.

The corpus is fed in segments of at most `segment` tokens. Every recurrent module of the model that is
called without a state gets one through a forward pre-hook (the model needs no changes): the forward
directions carry their final state on to the next segment of the same run of tokens, while reverse
directions always start from zero at the end of a segment. The forward stops as soon as every named
layer has run; until then a named layer or a state-carrying recurrent module must run once per forward.
`state` chooses the runs of tokens, each of which starts from a zero state:

- "carry": the whole corpus, cut into `batch_size` parallel streams (like batched LM training) whose
  lengths are multiples of 256 tokens; the state is reset at each stream start (listed in the
  project's `extra.extraction.resets`). With `batch_size=1` the state is carried over all N tokens.
- "document": each document (`documents` holds their start offsets).
- "window:N": consecutive windows of N tokens, each fed whole in one call.

Projects are written into a hidden sibling folder and renamed into place when complete.
"""
from __future__ import annotations

import importlib
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import yaml
from torch import nn

from core.atomic import atomic_folder
from core.hooks import Trace, TraceDict, get_module
from seqvis.vocab import Tokenizer, split_documents, write_dict

RECURRENT = (nn.LSTM, nn.GRU, nn.RNN)
# States chunks: a context window of ~200 rows x all units reads 2-3 row-chunks, one unit's column reads
# N x 32 values (1/20 of a 650-unit layer), and 32 KiB chunks keep the chunk index small at 10M+ tokens.
# No compression: float32 states are close to incompressible (gzip gains ~10%) and every read would pay for it.
ROW_CHUNK, UNIT_CHUNK = 256, 32
POOL_TOKENS = 1 << 20


def load_model(spec: str, weights: str | Path | None = None) -> nn.Module:
    """The nn.Module that `factory()` returns for spec "package.module:factory", with `weights` loaded, in eval mode."""
    if not isinstance(spec, str) or not re.fullmatch(r"[\w.]+:[\w.]+", spec):
        raise ValueError(f"model spec must look like 'package.module:factory', got {spec!r}")
    module_name, attribute = spec.split(":")
    try:
        found: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise ValueError(f"model spec {spec!r}: cannot import {module_name!r} ({error}); is it on the Python path?") \
            from None
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise ValueError(f"model spec {spec!r}: {module_name!r} has no attribute {attribute!r}")
        found = getattr(found, part)
    if not callable(found):
        raise ValueError(f"model spec {spec!r}: {attribute!r} is a {type(found).__name__}, not a factory function")
    model = found()
    if not isinstance(model, nn.Module):
        raise ValueError(f"model spec {spec!r}: {attribute}() returned a {type(model).__name__}, "
                         f"not a torch.nn.Module")
    if weights is not None:
        load_weights(model, weights)
    return model.eval()


def load_weights(model: nn.Module, weights: str | Path) -> None:
    """Load a state dict saved with `torch.save(model.state_dict(), path)`; a file that does not fit is refused."""
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} not found")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # torch raises pickle, zip and runtime errors alike for a file it cannot read
        raise ValueError(f"weights file {str(path)!r} is not a torch state dict file ({type(error).__name__} from "
                         f"torch.load with weights_only=True); save the weights with "
                         f"torch.save(model.state_dict(), path)") from None
    if not (isinstance(state, Mapping) and state
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())):
        raise ValueError(f"weights file {str(path)!r} does not hold a state dict (parameter names -> tensors); "
                         f"save it with torch.save(model.state_dict(), path)")
    expected = model.state_dict()
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    problems = [f"{label} {', '.join(items[:5])}" + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")
                for label, items in (("missing keys", [k for k in expected if k not in state]),
                                     ("unexpected keys", [k for k in state if k not in expected]),
                                     ("shape mismatch (file vs model)", shapes)) if items]
    if problems:
        raise ValueError(f"weights file {str(path)!r} does not fit {type(model).__name__}: {'; '.join(problems)}")
    model.load_state_dict(state)


def recurrent_states(rnn: nn.LSTM | nn.GRU | nn.RNN, x: torch.Tensor, hx: Any = None) -> dict[str, torch.Tensor]:
    """h (and c for nn.LSTM) at every position of every stacked layer and direction, by stepping `rnn`'s weights.

    `x` and `hx` are what `rnn` is called with (batched, laid out as `rnn.batch_first` says). Returns
    `[batch, time, units]` tensors named "l<k>.h", "l<k>.c", with ".reverse" for the second direction.
    Input projections of a whole sequence take one matmul; only the recurrent part is stepped.
    """
    if not isinstance(rnn, RECURRENT):
        raise TypeError(f"rnn must be an nn.LSTM, nn.GRU or nn.RNN, got {type(rnn).__name__}")
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        raise ValueError(f"x must be a batched [batch, time, features] tensor (packed or unbatched input is not "
                         f"supported), got {type(x).__name__} {tuple(getattr(x, 'shape', ()))}")
    cell = "lstm" if isinstance(rnn, nn.LSTM) else "gru" if isinstance(rnn, nn.GRU) else rnn.mode.lower()
    directions = 2 if rnn.bidirectional else 1
    sequence = x.transpose(0, 1) if rnn.batch_first else x
    batch, out_size = sequence.shape[1], getattr(rnn, "proj_size", 0) or rnn.hidden_size
    h0, c0 = hx if cell == "lstm" and hx is not None else (hx, None)
    slots = rnn.num_layers * directions
    h0 = h0 if h0 is not None else sequence.new_zeros(slots, batch, out_size)
    c0 = c0 if c0 is not None else sequence.new_zeros(slots, batch, rnn.hidden_size)
    states: dict[str, torch.Tensor] = {}
    for k in range(rnn.num_layers):
        outputs = []
        for d in range(directions):
            suffix, tail = ("_reverse", ".reverse") if d else ("", "")
            weight = {name: getattr(rnn, f"{name}_l{k}{suffix}", None)
                      for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")}
            h, c = _step(cell, sequence, weight, h0[k * directions + d], c0[k * directions + d], reverse=bool(d))
            states[f"l{k}.h{tail}"] = h.transpose(0, 1)
            if cell == "lstm":
                states[f"l{k}.c{tail}"] = c.transpose(0, 1)
            outputs.append(h)
        sequence = torch.cat(outputs, dim=-1)
    return states


def _step(cell: str, sequence: torch.Tensor, weight: dict[str, torch.Tensor | None], h: torch.Tensor,
          c: torch.Tensor, *, reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One direction of one layer over `sequence` [T, B, I]: its h [T, B, H] and (LSTM) c [T, B, H]."""
    w_hh_t = weight["weight_hh"].t()
    bias_ih, bias_hh = weight["bias_ih"], weight["bias_hh"]
    folded = None if bias_ih is None else (bias_ih if cell == "gru" else bias_ih + bias_hh)
    projected = nn.functional.linear(sequence, weight["weight_ih"], folded)
    steps = range(len(sequence) - 1, -1, -1) if reverse else range(len(sequence))
    hs = sequence.new_empty(len(sequence), *h.shape)
    cs = sequence.new_empty(len(sequence), *c.shape) if cell == "lstm" else None
    size = c.shape[-1]
    for t in steps:
        if cell == "lstm":
            gates = torch.addmm(projected[t], h, w_hh_t)
            i, f, _, o = torch.sigmoid(gates).chunk(4, dim=1)
            c = torch.addcmul(f * c, i, torch.tanh(gates[:, 2 * size:3 * size]))
            h = o * torch.tanh(c)
            if weight["weight_hr"] is not None:
                h = h @ weight["weight_hr"].t()
            cs[t] = c
        elif cell == "gru":
            recurrent = h @ w_hh_t if bias_hh is None else torch.addmm(bias_hh, h, w_hh_t)
            x_r, x_z, x_n = projected[t].chunk(3, dim=1)
            h_r, h_z, h_n = recurrent.chunk(3, dim=1)
            z = torch.sigmoid(x_z + h_z)
            n = torch.tanh(x_n + torch.sigmoid(x_r + h_r) * h_n)
            h = n + z * (h - n)
        else:
            pre = torch.addmm(projected[t], h, w_hh_t)
            h = torch.tanh(pre) if cell == "rnn_tanh" else torch.relu(pre)
        hs[t] = h
    return hs, cs


class _Carry:
    """The state one recurrent module carries from call to call, one slot per row of the current group."""

    def __init__(self, name: str, module: nn.LSTM | nn.GRU | nn.RNN):
        self.name, self.module = name, module
        self.lstm = isinstance(module, nn.LSTM)
        directions = 2 if module.bidirectional else 1
        self.slots = module.num_layers * directions
        self.forward_slots = torch.arange(0, self.slots, directions)
        self.out_size = getattr(module, "proj_size", 0) or module.hidden_size
        self.h = self.c = self.rows = self.x = self.hx = None
        self.calls, self.supplied = 0, False

    def reset(self, rows: int) -> None:
        """Zero states for a new group of `rows` runs."""
        weight = next(self.module.parameters())
        self.h = weight.new_zeros(self.slots, rows, self.out_size)
        self.c = weight.new_zeros(self.slots, rows, self.module.hidden_size) if self.lstm else None

    def supply(self, args: tuple, kwargs: dict, layer: str) -> tuple[tuple, dict]:
        """The forward pre-hook edit: add the carried hx when the model passes none; remember x and hx."""
        self.calls += 1
        x, hx = args[0], args[1] if len(args) > 1 else kwargs.get("hx")
        if not isinstance(x, torch.Tensor) or x.ndim != 3:
            raise ValueError(f"recurrent layer {layer!r} got {type(x).__name__} {tuple(getattr(x, 'shape', ()))}; "
                             f"seqvis needs a batched [batch, time, features] tensor (no packed sequences)")
        self.supplied = hx is None
        if hx is None:
            hx = (self.h[:, self.rows], self.c[:, self.rows]) if self.lstm else self.h[:, self.rows]
            args, kwargs = args[:1], {**kwargs, "hx": hx}
        self.x, self.hx = x, hx
        return args, kwargs

    def advance(self, output: Any) -> None:
        """Keep the forward directions' final states of this call as the rows' state for their next segment."""
        if self.calls == 0 or not self.supplied:
            return
        if self.calls > 1:
            raise ValueError(f"recurrent module {self.name!r} ran {self.calls} times in one forward; seqvis can "
                             f"carry its state only when it runs once per forward (or when the model passes hx)")
        h_n, c_n = output[1] if self.lstm else (output[1], None)
        index = (self.forward_slots[:, None], self.rows)
        self.h[index] = h_n[self.forward_slots]
        if self.lstm:
            self.c[index] = c_n[self.forward_slots]


class _StateRecorder:
    """Hooks `layers` of `model`, carries every recurrent module's state between calls, returns each call's layers."""

    def __init__(self, model: nn.Module, layers: Sequence[str]):
        self.model, self.layers = model, list(layers)
        modules = {layer: get_module(model, layer) for layer in self.layers}
        self.carries = {id(module): _Carry(name, module) for name, module in model.named_modules()
                        if isinstance(module, RECURRENT)}
        self._carry_of = {layer: self.carries[id(m)] for layer, m in modules.items() if id(m) in self.carries}
        hooked = {id(m) for m in modules.values()}
        self._unhooked = [carry.name for key, carry in self.carries.items() if key not in hooked]
        self._carry_of.update({carry.name: carry for key, carry in self.carries.items() if key not in hooked})
        self.device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self._checked: set[str] = set()

    def start_group(self, rows: int) -> None:
        for carry in self.carries.values():
            carry.reset(rows)

    def _supply(self, args: tuple, kwargs: dict, layer: str) -> tuple[tuple, dict]:
        carry = self._carry_of.get(layer)
        return carry.supply(args, kwargs, layer) if carry else (args, kwargs)

    def __call__(self, ids: torch.Tensor, rows: list[int]) -> dict[str, np.ndarray]:
        """Project layers `[rows, time, units]` (float32) for one call on token ids `[rows, time]`."""
        rows_index = torch.as_tensor(rows, device=self.device)
        for carry in self.carries.values():
            carry.rows, carry.calls = rows_index, 0
        with ExitStack() as stack:
            traced = stack.enter_context(TraceDict(self.model, self.layers, stop=True, edit_input=self._supply))
            traces = {name: stack.enter_context(Trace(self.model, name, edit_input=self._supply))
                      for name in self._unhooked}
            traces.update({self._carry_of[layer].name: traced[layer] for layer in self.layers
                           if layer in self._carry_of})
            try:
                self.model(ids.to(self.device))
            except IndexError as error:
                raise ValueError(f"the model failed on token ids in [0, {int(ids.max()) + 1}): {error}; does the "
                                 f"vocabulary match the model's (pass its vocabulary file)?") from error
        states: dict[str, np.ndarray] = {}
        for layer in self.layers:
            trace = traced[layer]
            if trace.calls != 1:
                raise ValueError(f"layer {layer!r} ran {trace.calls} times in one forward of the model; "
                                 f"extraction needs exactly one call per forward")
            carry = self._carry_of.get(layer)
            if carry is None:
                states[layer] = _sequence_output(trace.output, layer, tuple(ids.shape))
                continue
            stepped = recurrent_states(carry.module, carry.x, carry.hx)
            if layer not in self._checked:
                _check_stepped(carry.module, layer, stepped, trace.output[0])
                self._checked.add(layer)
            states.update({f"{layer}.{key}": value.float().cpu().numpy() for key, value in stepped.items()})
        for carry in self.carries.values():
            carry.advance(traces[carry.name].output)
        return states


def _sequence_output(output: Any, layer: str, shape: tuple[int, int]) -> np.ndarray:
    """A non-recurrent layer's output as float32 `[batch, time, units]`; anything else is refused."""
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, torch.Tensor) or output.ndim < 3 or tuple(output.shape[:2]) != shape:
        found = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(f"layer {layer!r} returned {found}; expected [batch, time, units...] = "
                         f"[{shape[0]}, {shape[1]}, ...] (batch-first, one vector per token)")
    return output.reshape(*shape, -1).float().cpu().numpy()


def _check_stepped(rnn: nn.Module, layer: str, stepped: dict[str, torch.Tensor], output: torch.Tensor) -> None:
    """Refuse a recurrent layer whose own output differs from the stepped last layer (e.g. a custom forward)."""
    last = f"l{rnn.num_layers - 1}.h"
    mine = torch.cat([stepped[last], *([stepped[f"{last}.reverse"]] if rnn.bidirectional else [])], dim=-1)
    theirs = output.transpose(0, 1) if not rnn.batch_first else output
    if mine.shape != theirs.shape or not torch.allclose(mine, theirs, rtol=1e-3, atol=1e-4):
        gap = (mine - theirs).abs().max().item() if mine.shape == theirs.shape else float("nan")
        raise ValueError(f"layer {layer!r}: stepping its weights does not reproduce its output (max difference "
                         f"{gap:.3g}); is it an nn.{type(rnn).__name__} subclass with a forward of its own?")


def _runs(n_tokens: int, documents: np.ndarray, state: str, batch_size: int) -> tuple[list[tuple[int, int]], dict]:
    """(start, length) of every run of tokens that starts from a zero state, and how `extra.extraction` says so."""
    if state == "carry":
        blocks, tail = divmod(n_tokens, ROW_CHUNK)
        streams = max(1, min(batch_size, blocks))
        share, more = divmod(blocks, streams)
        lengths = [(share + (s < more)) * ROW_CHUNK for s in range(streams)]
        lengths[-1] += tail
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int).tolist()
        return list(zip(starts, lengths)), {"state": "carry", "resets": starts}
    if state == "document":
        ends = [*documents[1:].tolist(), n_tokens]
        return [(int(a), int(b) - int(a)) for a, b in zip(documents, ends)], {"state": "document"}
    size = _window_size(state)
    starts = range(0, n_tokens, size)
    return [(a, min(size, n_tokens - a)) for a in starts], {"state": state, "window": size}


def _window_size(state: str) -> int:
    match = re.fullmatch(r"window:([1-9]\d*)", state) if isinstance(state, str) else None
    if match is None:
        raise ValueError(f"state must be 'carry', 'document' or 'window:N' with N >= 1, got {state!r}")
    return int(match.group(1))


def _calls(runs: list[tuple[int, int]], rows: int, segment: int) -> Iterator[tuple[list[tuple[int, int]], list]]:
    """Groups of at most `rows` runs, each with its model calls as (group-local rows, offset, length).

    Runs are sorted by length within pools of about POOL_TOKENS consecutive tokens (and at least `rows`
    runs), so that a group's rows mostly have one length while writes stay within a region of the file;
    the rows of a group advance together by `segment` tokens, and one call holds rows of one length.
    """
    for pool in _pools(runs, rows):
        ordered = sorted(pool, key=lambda run: -run[1])
        for g in range(0, len(ordered), rows):
            group = ordered[g:g + rows]
            calls = []
            for offset in range(0, group[0][1], segment):
                by_length: dict[int, list[int]] = {}
                for i, (_, length) in enumerate(group):
                    if length > offset:
                        by_length.setdefault(min(segment, length - offset), []).append(i)
                calls.extend((members, offset, size) for size, members in by_length.items())
            yield group, calls


def _pools(runs: list[tuple[int, int]], rows: int) -> Iterator[list[tuple[int, int]]]:
    pool, tokens = [], 0
    for run in runs:
        pool.append(run)
        tokens += run[1]
        if len(pool) >= rows and tokens >= POOL_TOKENS:
            yield pool
            pool, tokens = [], 0
    if pool:
        yield pool


def _check_meta(meta: Mapping[str, Mapping] | None, n_tokens: int) -> dict[str, dict]:
    """The extra meta tracks, checked: name -> {type, values, labels?, range?}."""
    checked: dict[str, dict] = {}
    for name, track in (meta or {}).items():
        where = f"meta[{name!r}]"
        if not isinstance(name, str) or not name or name == "doc" or "/" in name:
            raise ValueError(f"meta track names must be non-empty, without '/', and not 'doc' (written always); "
                             f"got {name!r}")
        if not isinstance(track, Mapping) or not set(track) <= {"type", "values", "labels", "range"}:
            raise ValueError(f"{where} must be a dict with keys type, values, labels?, range?")
        kind, values = track.get("type"), np.asarray(track.get("values"))
        if kind not in ("discrete", "scalar"):
            raise ValueError(f"{where}['type'] must be 'discrete' or 'scalar', got {kind!r}")
        if values.shape != (n_tokens,):
            raise ValueError(f"{where}['values'] must have shape ({n_tokens},) (one per token), got {values.shape}")
        entry: dict[str, Any] = {"type": kind}
        if kind == "discrete":
            if values.dtype.kind not in "iu":
                raise ValueError(f"{where}['values'] of a discrete track must be integers, got {values.dtype}")
            values = values.astype(np.int32)
            labels = track.get("labels")
            if labels is not None:
                if isinstance(labels, str) or not all(isinstance(x, str) for x in labels):
                    raise ValueError(f"{where}['labels'] must be a list of str")
                if len(values) and not 0 <= values.min() <= values.max() < len(labels):
                    raise ValueError(f"{where}['values'] must lie in [0, {len(labels)}) to index its labels")
                entry["labels"] = list(labels)
        else:
            if values.dtype.kind not in "iuf":
                raise ValueError(f"{where}['values'] of a scalar track must be numbers, got {values.dtype}")
            values = values.astype(np.float32)
            bounds = track.get("range")
            bounds = [np.nanmin(values), np.nanmax(values)] if bounds is None else bounds
            if not (isinstance(bounds, (list, tuple)) and len(bounds) == 2
                    and all(isinstance(b, (int, float, np.number)) for b in bounds) and bounds[0] <= bounds[1]):
                raise ValueError(f"{where}['range'] must be [low, high] with low <= high, got {bounds!r}")
            entry["range"] = [float(bounds[0]), float(bounds[1])]
        checked[name] = {**entry, "values": values}
    return checked


def _check_documents(documents: np.ndarray | None, n_tokens: int) -> np.ndarray:
    if documents is None:
        return np.zeros(1, dtype=np.int64)
    starts = np.asarray(documents)
    if starts.ndim != 1 or not len(starts) or starts.dtype.kind not in "iu":
        raise ValueError("documents must be a non-empty 1-D integer array of document start offsets")
    if starts[0] != 0 or (np.diff(starts) <= 0).any() or starts[-1] >= n_tokens:
        raise ValueError(f"documents must start with 0 and increase strictly below the token count {n_tokens}")
    return starts.astype(np.int64)


def write_token_project(out_dir: str | Path, *, model: nn.Module, token_ids: np.ndarray, vocab: list[str],
                        layers: list[str], documents: np.ndarray | None = None, state: str = "carry",
                        meta: dict[str, dict] | None = None, name: str, description: str = "",
                        extra: dict | None = None, batch_size: int = 64, segment: int = 256,
                        overwrite: bool = False, progress: Any = None) -> Path:
    """Run `model` over `token_ids` and write a token-states project (seqvis.yml and HDF5 files) to `out_dir`.

    States are streamed to disk call by call; see the module docstring for the model convention, the
    layer names and `state`. Returns `out_dir`.
    """
    out_dir = Path(out_dir)
    ids = np.asarray(token_ids)
    if ids.ndim != 1 or not len(ids) or ids.dtype.kind not in "iu":
        raise ValueError(f"token_ids must be a non-empty 1-D integer array, got {ids.dtype} {ids.shape}")
    if isinstance(vocab, str) or not any(vocab) or not all(isinstance(word, str) for word in vocab):
        raise ValueError("vocab must be a list of str, indexed by token id (\"\" for unused ids)")
    if ids.min() < 0 or ids.max() >= len(vocab):
        raise ValueError(f"token_ids must lie in [0, {len(vocab)}) (the vocab size), found [{ids.min()}, {ids.max()}]")
    if isinstance(layers, str) or not layers or len(set(layers)) != len(layers):
        raise ValueError(f"layers must be a non-empty list of distinct dotted module names, got {layers!r}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    for argument, value in (("batch_size", batch_size), ("segment", segment)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{argument} must be a positive int, got {value!r}")
    starts = _check_documents(documents, len(ids))
    tracks = _check_meta(meta, len(ids))
    if state != "carry" and state != "document":
        segment = _window_size(state)
    try:
        yaml.safe_dump(extra or {})
    except yaml.YAMLError as error:
        raise ValueError(f"extra must hold plain YAML data (str, numbers, lists, dicts): {error}") from None
    recorder = _StateRecorder(model, layers)
    runs, extraction = _runs(len(ids), starts, state, batch_size)
    was_training = model.training
    model.eval()
    try:
        with atomic_folder(out_dir.resolve(), overwrite) as work:
            layer_names = _write_states(work / "states.h5", recorder, ids, runs, batch_size, segment, progress)
            _write_inputs(work, ids, vocab, starts, tracks)
            description_file = {
                "seqvis": 1, "kind": "tokens", "name": name, "description": description,
                "tokens": {"file": "tokens.h5", "path": "tokens"}, "vocab": "vocab.dict",
                "layers": [{"name": layer, "file": "states.h5", "path": layer, "transform": "tanh"}
                           for layer in layer_names],
                "meta": {"doc": {"file": "meta.h5", "path": "doc", "type": "discrete"},
                         **{key: {"file": "meta.h5", "path": key, **{k: v for k, v in track.items() if k != "values"}}
                            for key, track in tracks.items()}},
                "extra": {**(extra or {}), "extraction": {**extraction, "segment": segment, "layers": list(layers)}},
            }
            (work / "seqvis.yml").write_text(yaml.safe_dump(description_file, sort_keys=False), encoding="utf-8")
    finally:
        model.train(was_training)
    return out_dir


def _write_states(path: Path, recorder: _StateRecorder, ids: np.ndarray, runs: list[tuple[int, int]], rows: int,
                  segment: int, progress: Any) -> list[str]:
    """Run every call and write its states row by row into float32 [N, U] datasets; returns the layer names."""
    if progress is not None:
        progress.start("extract states", len(ids))
    tokens = torch.from_numpy(ids.astype(np.int64))
    datasets: dict[str, h5py.Dataset] = {}
    with h5py.File(path, "w", rdcc_nbytes=16 << 20, rdcc_nslots=10007) as file, torch.no_grad():
        for group, calls in _calls(runs, rows, segment):
            recorder.start_group(len(group))
            for members, offset, size in calls:
                starts = [group[m][0] + offset for m in members]
                batch = torch.stack([tokens[start:start + size] for start in starts])
                for layer, values in recorder(batch, members).items():
                    if layer not in datasets:
                        units = values.shape[2]
                        datasets[layer] = file.create_dataset(
                            layer, shape=(len(ids), units), dtype=np.float32,
                            chunks=(min(ROW_CHUNK, len(ids)), min(UNIT_CHUNK, units)))
                    for row, start in enumerate(starts):
                        datasets[layer][start:start + size] = values[row]
                if progress is not None:
                    progress.update(len(members) * size)
    return list(datasets)


def _write_inputs(folder: Path, ids: np.ndarray, vocab: list[str], starts: np.ndarray,
                  tracks: dict[str, dict]) -> None:
    """tokens.h5, vocab.dict and meta.h5 (the document index of every token, then the extra tracks)."""
    with h5py.File(folder / "tokens.h5", "w") as file:
        file.create_dataset("tokens", data=ids.astype(np.int32))
    write_dict(folder / "vocab.dict", vocab)
    lengths = np.diff(np.append(starts, len(ids)))
    with h5py.File(folder / "meta.h5", "w") as file:
        file.create_dataset("doc", data=np.repeat(np.arange(len(starts), dtype=np.int32), lengths))
        for key, track in tracks.items():
            file.create_dataset(key, data=track["values"])


def extract_corpus(out_dir: str | Path, *, model: nn.Module | str, corpus: Sequence[str | Path], layers: list[str],
                   weights: str | Path | None = None, tokenizer: str = "char", vocab: str | Path | None = None,
                   documents: str = "file", state: str = "carry", name: str | None = None, description: str = "",
                   batch_size: int = 64, segment: int = 256, overwrite: bool = False,
                   progress: Any = None) -> Path:
    """Read UTF-8 `corpus` files, cut them into `documents`, tokenize and write a project with `write_token_project`.

    `model` is an nn.Module, or a "package.module:factory" spec loaded with `weights` by `load_model`.
    Without a `vocab` file the vocabulary is the sorted set of corpus tokens, which matches a model only
    if it was trained with that convention; pass the model's own dictionary otherwise. Input files
    must lie outside `out_dir`, which an overwrite replaces.
    """
    out_dir = Path(out_dir)
    if isinstance(corpus, (str, Path)) or not corpus:
        raise ValueError("corpus must be a non-empty list of text files")
    if weights is not None and not isinstance(model, str):
        raise ValueError("weights only apply when model is a 'package.module:factory' spec")
    for path in [*map(Path, corpus), *(Path(p) for p in (vocab, weights) if p is not None)]:
        if path.resolve().is_relative_to(out_dir.resolve()):
            raise ValueError(f"input {str(path)!r} lies inside out_dir {str(out_dir)!r}, which is written over")
    texts = []
    for path in map(Path, corpus):
        if not path.is_file():
            raise FileNotFoundError(f"corpus file {str(path)!r} not found")
        try:
            texts.append(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as error:
            raise ValueError(f"corpus file {str(path)!r} is not UTF-8 text ({error})") from None
    pieces = [piece for text in texts for piece in split_documents(text, documents)]
    coder = Tokenizer.from_file(tokenizer, vocab) if vocab is not None else Tokenizer.fit(tokenizer, pieces)
    encoded = [ids for ids in map(coder.encode, pieces) if len(ids)]
    if not encoded:
        raise ValueError("the corpus holds no tokens")
    lengths = np.array([len(ids) for ids in encoded])
    source = {"corpus": [path.name for path in map(Path, corpus)], "tokenizer": tokenizer, "documents": documents}
    if isinstance(model, str):
        source.update(model=model, weights=None if weights is None else Path(weights).name)
        model = load_model(model, weights)
    return write_token_project(
        out_dir, model=model, token_ids=np.concatenate(encoded), vocab=coder.vocab, layers=layers,
        documents=np.concatenate([[0], np.cumsum(lengths)[:-1]]), state=state,
        name=name or out_dir.resolve().name, description=description, extra={"source": source},
        batch_size=batch_size, segment=segment, overwrite=overwrite, progress=progress)
