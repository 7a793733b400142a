"""Hidden-state explorer services over one token project: context windows, cell selection, match, text search,
unit labels. Plain data in and out; the server turns it into JSON."""
from __future__ import annotations

import base64
import re
import time
from pathlib import Path

import numpy as np

from core import search
from seqvis import labels
from seqvis.jobs import Jobs
from seqvis.progress import Progress
from seqvis.projects import Layer, MetaTrack, TokenProject

MAX_WINDOW = 2000          # tokens in one context window
MATCH_CONTEXT = 5          # tokens shown on each side of a match
SEARCH_SECONDS = 1.0       # time bound of one text search
SEARCH_BLOCK = 1 << 20     # tokens decoded per search block


def transformed(values: np.ndarray, layer: Layer, transform: str | None = None) -> np.ndarray:
    """States as the views show and threshold them: through tanh unless the layer (or the caller) says none;
    bit-identical to what the match index compares."""
    return search.transformed(values, transform or layer.transform)


class Explorer:
    """The explorer's answers for one token project; match indexes live in `cache_dir`."""

    kind = "tokens"

    def __init__(self, project: TokenProject, cache_dir: Path):
        self.project = project
        self.cache_dir = Path(cache_dir)
        self._jobs = Jobs()

    # -- lookups that name what is wrong -------------------------------------------------------------
    def layer(self, name: str) -> Layer:
        if name not in self.project.layers:
            raise LookupError(f"layer: unknown layer {name!r}; known: {', '.join(self.project.layers)}")
        return self.project.layers[name]

    def check_units(self, layer: Layer, units: list[int]) -> np.ndarray:
        bad = [unit for unit in units if not 0 <= unit < layer.units]
        if bad:
            raise ValueError(f"units: {bad[0]} is not a unit of layer {layer.name!r} (0..{layer.units - 1})")
        return np.asarray(units, dtype=np.int64)

    def check_range(self, start: int, stop: int, *, limit: int = MAX_WINDOW) -> None:
        n = len(self.project)
        if not 0 <= start < stop <= n:
            raise ValueError(f"range: need 0 <= start < stop <= {n}, got start={start}, stop={stop}")
        if stop - start > limit:
            raise ValueError(f"range: at most {limit} tokens at once, got {stop - start}")

    # -- context ------------------------------------------------------------------------------------
    def context(self, layer_name: str, start: int, stop: int, units: list[int] | None = None,
                transform: str | None = None, encoding: str = "json") -> dict:
        """Words, meta tracks and the states of `units` (all by default) for tokens [start, stop), one row per unit:
        as lists of numbers, or (`encoding="float32"`) as base64 of the little-endian float32 [units, tokens]
        matrix, which is exact and about ten times faster to make and to read for wide layers."""
        layer = self.layer(layer_name)
        self.check_range(start, stop)
        rows = layer.dataset[start:stop]
        if units is not None:
            rows = rows[:, self.check_units(layer, units)]
        states = transformed(rows, layer, transform).T      # [units, tokens]: one line per unit
        if encoding == "float32":
            states = base64.b64encode(np.ascontiguousarray(states, dtype="<f4").tobytes()).decode("ascii")
        elif encoding == "json":
            states = np.round(states, 4).tolist()
        else:
            raise ValueError(f"encoding: must be json or float32, got {encoding!r}")
        return {
            "layer": layer.name, "start": start, "stop": stop, "encoding": encoding,
            "units": list(range(layer.units)) if units is None else list(units),
            "words": self.project.words(start, stop),
            "states": states,
            "meta": self.meta(start, stop),
        }

    def meta(self, start: int, stop: int) -> dict:
        """Every meta track's values over tokens [start, stop)."""
        return {name: self.meta_values(track, start, stop) for name, track in self.project.meta.items()}

    def meta_values(self, track: MetaTrack, start: int, stop: int) -> dict:
        values = track.dataset[start:stop]
        answer = {"type": track.type, "values": values.tolist()}
        if track.type == "discrete" and track.labels is not None:
            answer["labels"] = [track.labels[v] if 0 <= v < len(track.labels) else str(v) for v in values.tolist()]
        elif track.type == "wordvec":
            vocab = self.project.vocab
            answer["words"] = [[vocab[v] if 0 <= v < len(vocab) else "?" for v in np.atleast_1d(row).tolist()]
                               for row in values]
        if track.range is not None:
            answer["range"] = list(track.range)
        return answer

    # -- select ---------------------------------------------------------------------------------------
    def select(self, layer_name: str, brush: tuple[int, int], padding: tuple[int, int] = (1, 0),
               threshold: float = 0.3) -> dict:
        """Units on (>= threshold) at every step of the brush [b0, b1) and off over the padding around it."""
        layer = self.layer(layer_name)
        b0, b1 = brush
        left, right = padding
        self.check_range(b0, b1)
        if left < 0 or right < 0:
            raise ValueError(f"padding: must not be negative, got {padding}")
        if b0 - left < 0 or b1 + right > len(self.project):
            raise ValueError(f"padding: brush [{b0}, {b1}) with padding {padding} leaves the corpus")
        window = transformed(layer.dataset[b0 - left:b1 + right], layer)
        units = search.select_units(window, (left, left + b1 - b0), padding, threshold)
        return {"layer": layer.name, "brush": [b0, b1], "padding": [left, right], "threshold": threshold,
                "units": units.tolist()}

    # -- match ------------------------------------------------------------------------------------------
    def match(self, layer_name: str, units: list[int], threshold: float = 0.3, *, phrase_length: int = 0,
              constrain: tuple[bool, bool] = (False, False), top: int = search.TOP, wait: bool = False) -> dict:
        """LSTMVis match over the whole corpus: the runs where the selected units are on, ranked, with their
        context, length histograms and per-meta summaries of the matched tokens. Uses the layer's match index,
        or an exact scan of the states while the index is still being built (`wait` builds it first)."""
        layer = self.layer(layer_name)
        self.check_units(layer, units)
        index = self.index(layer, wait=wait)
        options = dict(phrase_length=phrase_length, constrain=constrain, top=top)
        if index is not None:
            result = index.match(units, threshold, **options)
        else:
            result = search.brute_force_match(layer.dataset, units, threshold, transform=layer.transform, **options)
        return {
            "layer": layer.name, "units": sorted(units), "threshold": threshold, "phrase_length": phrase_length,
            "constrain": list(constrain), "index": self.index_status(layer),
            "results": [self._match_context(layer, units, threshold, c.start, c.stop) | {
                "on": c.selected_on, "union": c.union, "length": c.length} for c in result.candidates],
            "histograms": {"fuzzy": result.fuzzy_lengths, "strict": result.strict_lengths},
            "total": result.total, "strict_total": result.strict_total,
            "meta": self._meta_summary([(c.start, c.stop) for c in result.candidates]),
        }

    def _match_context(self, layer: Layer, units: list[int], threshold: float, start: int, stop: int) -> dict:
        """A matched run [start, stop) with a few tokens around it: words, meta tracks and per token how many selected
        units are on."""
        lo, hi = max(0, start - MATCH_CONTEXT), min(len(self.project), stop + MATCH_CONTEXT)
        rows = transformed(layer.dataset[lo:hi][:, sorted(units)], layer)
        return {"start": start, "stop": stop,
                "context": {"start": lo, "stop": hi, "words": self.project.words(lo, hi), "meta": self.meta(lo, hi),
                            "on_counts": (rows >= search.ceil_float32(threshold)).sum(axis=1).tolist()}}

    def _meta_summary(self, runs: list[tuple[int, int]]) -> dict:
        """For each discrete meta track, how often each value occurs over the matched tokens."""
        summary = {}
        for name, track in self.project.meta.items():
            if track.type != "discrete" or not runs:
                continue
            values = np.concatenate([track.dataset[start:stop] for start, stop in runs]).astype(np.int64)
            counts = np.bincount(values - values.min())
            present = np.flatnonzero(counts)
            labels = track.labels or []
            summary[name] = {
                "values": (present + values.min()).tolist(), "counts": counts[present].tolist(),
                "labels": [labels[v] if 0 <= v < len(labels) else str(v) for v in (present + values.min()).tolist()],
            }
        return summary

    # -- match indexes ------------------------------------------------------------------------------------
    def index_path(self, layer: Layer) -> Path:
        return self.cache_dir / f"{layer.name}.{layer.transform}.match"

    def index(self, layer: Layer, *, wait: bool = False) -> search.MatchIndex | None:
        """The layer's match index if it is ready; otherwise start building it in the background (or, with
        `wait`, build it now) and return None (callers scan the states meanwhile)."""
        def load() -> search.MatchIndex | None:
            try:
                return search.MatchIndex.open(self.index_path(layer), layer.dataset)
            except (FileNotFoundError, search.StaleIndexError):
                return None                    # (re)built by `build`, replacing a stale file atomically

        def build(progress: Progress) -> search.MatchIndex:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            return search.MatchIndex.build(layer.dataset, self.index_path(layer), transform=layer.transform,
                                           progress=progress)

        return self._jobs.result(("index", layer.name), f"match index {self.project.name}/{layer.name}", load,
                                 build, wait=wait)

    def index_status(self, layer: Layer) -> dict:
        """"ready", or "building" with progress: the page says when a match scanned without the index."""
        return self._jobs.status(("index", layer.name))

    # -- unit labels --------------------------------------------------------------------------------------
    def labels(self, layer_name: str, *, by: str = "iou", wait: bool = False) -> dict:
        """Each unit's best concept (IoU at the best threshold, AP, direction, shifted-label baseline) and each
        concept's best unit, computed once per layer in the background (`status` says how far it is)."""
        layer = self.layer(layer_name)
        if by not in ("iou", "ap"):
            raise ValueError(f"by: must be iou or ap, got {by!r}")
        found = self._jobs.result(("labels", layer.name), f"unit labels {self.project.name}/{layer.name}",
                                  lambda: labels.load_cached(self.project, layer, self.cache_dir),
                                  lambda progress: labels.dissect_layer(self.project, layer, self.cache_dir, progress),
                                  wait=wait)
        answer = {"layer": layer.name, **self._jobs.status(("labels", layer.name))}
        if found is None:
            return answer
        table = labels.summary(found, per_unit=1, by=by)
        return answer | table | {"units": [best for [best] in table["units"]]}

    def unit(self, layer_name: str, unit: int, *, k: int = 10) -> dict:
        """One unit: its best concepts (when the layer's labels are ready) and its top contexts in both directions."""
        layer = self.layer(layer_name)
        self.check_units(layer, [unit])
        found = self._jobs.result(("labels", layer.name), "", lambda: labels.load_cached(self.project, layer,
                                                                                          self.cache_dir))
        return {
            "layer": layer.name, "unit": unit,
            "labels": [] if found is None else [vars(record) for record in found.unit_labels(unit, 5)],
            "top": labels.top_contexts(self.project, layer, unit, k),
            "bottom": labels.top_contexts(self.project, layer, unit, k, direction=-1),
        }

    # -- text search -----------------------------------------------------------------------------------
    def search_text(self, query: str, *, regex: bool = False, limit: int = 100,
                    seconds: float = SEARCH_SECONDS) -> dict:
        """Token positions where `query` (a phrase of words, or a regular expression over the joined words)
        starts; bounded in results and time, and says whether it scanned the whole corpus."""
        if not query:
            raise ValueError("query: must not be empty")
        try:
            pattern = re.compile(query if regex else re.escape(query))
        except re.error as error:
            raise ValueError(f"query: not a regular expression: {error}") from None
        deadline = time.monotonic() + seconds
        n, hits, position = len(self.project), [], 0
        separator = "" if self._is_char_level() else " "
        overlap = 256
        while position < n and len(hits) < limit and time.monotonic() < deadline:
            stop = min(n, position + SEARCH_BLOCK)
            words = self.project.words(position, min(n, stop + overlap))
            text, offsets = _join(words, separator)
            for found in pattern.finditer(text):
                token = int(np.searchsorted(offsets, found.start(), side="right")) - 1
                if position + token >= stop:
                    break
                end = int(np.searchsorted(offsets, max(found.end() - 1, found.start()), side="right"))
                hits.append({"start": position + token, "stop": position + max(end, token + 1)})
                if len(hits) >= limit:
                    break
            position = stop
        return {"query": query, "regex": regex, "hits": hits, "complete": position >= n and len(hits) < limit,
                "scanned": position}

    def _is_char_level(self) -> bool:
        """Character vocabularies join without spaces (a few multi-character entries like <unk> aside)."""
        vocab = self.project.vocab
        return sum(len(word) <= 1 for word in vocab) >= 0.9 * len(vocab)


def _join(words: list[str], separator: str) -> tuple[str, np.ndarray]:
    """Words joined into one string, and the character offset at which each word starts."""
    lengths = np.fromiter((len(word) + len(separator) for word in words), dtype=np.int64, count=len(words))
    offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    return separator.join(words), offsets
