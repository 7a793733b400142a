"""Read concept datasets in the Broden layout (NetDissect, Bau et al. 2017), read-only.

A Broden folder holds:

- `index.csv`: one row per image: `image, split, ih, iw, sh, sw`, then one column per category. A category
  cell is a ';'-separated list; an integer is an image-level label (a label number that covers the whole
  image), anything else a PNG label map whose label number at a pixel is R + 256 * G (0: no label). Image
  and map paths are relative to `images/`. An image may have several maps per category (Broden's parts).
- `label.csv`: `number, name, category, ...`; `category` lists `cat(count)` entries separated by ';' and a
  label's category is the one with the largest count (NetDissect's primary category). Number 0 is "none".
- `category.csv`: `name, ...`, the categories.
- `c_<category>.csv` (optional here): `code, number, name, ...`, the labels of one category; checked
  against label.csv when present.

Concepts are the labels in number order; `Batch`-ready arrays use concept index + 1 for a label, 0 for none:

    data = Broden("broden1_224")
    for batch in data.batches(64):
        batch.images            # uint8 [n, ih, iw, 3] RGB
        batch.labels            # int32 [n, maps, sh, sw]
        batch.item_labels       # bool [n, concepts]
"""
from __future__ import annotations

import csv
import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

INDEX_COLUMNS = ("image", "split", "ih", "iw", "sh", "sw")
_INTEGER = re.compile(r"\d+")
_LABEL_CATEGORY = re.compile(r"\s*([^()]+?)\s*(?:\((\d+)\))?\s*")


class BrodenError(ValueError):
    """A malformed Broden folder; the message names the file (and line) at fault."""


@dataclass(frozen=True)
class Record:
    """One row of index.csv: the image, its split and sizes, its label maps and its image-level concepts."""
    image: str
    split: str
    size: tuple[int, int]              # (ih, iw)
    label_size: tuple[int, int]        # (sh, sw)
    maps: tuple[str, ...]              # PNG paths under images/
    concepts: tuple[int, ...]          # concept indices labelling the whole image
    line: int


@dataclass
class BrodenBatch:
    """Images and concepts of some items of a Broden dataset, shaped for `core.align.Batch`."""
    indices: np.ndarray                # [n] item indices into `Broden.records`
    images: np.ndarray                 # uint8 [n, ih, iw, 3] RGB
    labels: np.ndarray                 # int32 [n, maps, sh, sw]: concept index + 1, 0 none
    item_labels: np.ndarray            # bool [n, concepts]


def _rows(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV file with a header that has the `required` columns."""
    name = path.name
    if not path.is_file():
        raise BrodenError(f"{name}: file not found in {path.parent}")
    try:
        with open(path, encoding="utf-8", newline="") as file:
            reader = csv.reader(file)
            header = next(reader, None)
            if header is None:
                raise BrodenError(f"{name}: the file is empty (expected a header line)")
            header = [column.strip() for column in header]
            missing = [column for column in required if column not in header]
            if missing:
                raise BrodenError(f"{name} line 1: missing column(s) {', '.join(missing)} "
                                  f"(header: {','.join(header)})")
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise BrodenError(f"{name} line {reader.line_num}: {len(row)} fields, the header has "
                                      f"{len(header)}")
                yield reader.line_num, {column: cell.strip() for column, cell in zip(header, row)}
    except UnicodeDecodeError as error:
        raise BrodenError(f"{name}: not UTF-8 text ({error})") from None
    except csv.Error as error:
        raise BrodenError(f"{name}: malformed CSV ({error})") from None


def _integer(value: str, name: str, line: int, column: str, *, positive: bool = False) -> int:
    if not _INTEGER.fullmatch(value) or (positive and int(value) == 0):
        kind = "a positive integer" if positive else "an integer >= 0"
        raise BrodenError(f"{name} line {line}: {column} must be {kind}, found {value!r}")
    return int(value)


class Broden:
    """A Broden-layout folder, parsed and checked when opened; images and label maps are read on demand.

    `split` keeps only the rows of that split (e.g. "val"). Raises BrodenError naming the file and line
    of the first problem found.
    """

    def __init__(self, folder: str | os.PathLike, split: str | None = None):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise BrodenError(f"{self.folder}: not a folder")
        self.categories = [row["name"] for _, row in _rows(self.folder / "category.csv", ["name"])]
        if len(set(self.categories)) != len(self.categories):
            raise BrodenError("category.csv: a category is listed twice")
        self._read_labels()
        for category in self.categories:
            self._check_category_file(category)
        self.records = self._read_index(split)
        if not self.records:
            raise BrodenError(f"index.csv: no images{'' if split is None else f' in split {split!r}'}")

    # -- parsing ---------------------------------------------------------------------------------------
    def _read_labels(self) -> None:
        names, categories, numbers = [], [], []
        for line, row in _rows(self.folder / "label.csv", ["number", "name", "category"]):
            number = _integer(row["number"], "label.csv", line, "number")
            if number == 0:
                continue
            if number in numbers:
                raise BrodenError(f"label.csv line {line}: label number {number} appears twice")
            if not row["name"]:
                raise BrodenError(f"label.csv line {line}: empty name")
            if row["name"] in names:
                raise BrodenError(f"label.csv line {line}: label name {row['name']!r} appears twice")
            categories.append(self._primary_category(row["category"], line))
            names.append(row["name"])
            numbers.append(number)
        if not numbers:
            raise BrodenError("label.csv: no labels")
        order = np.argsort(numbers, kind="stable")
        self.concepts = [names[i] for i in order]
        self.concept_category = np.array([categories[i] for i in order], dtype=np.int64)
        self.numbers = np.array(numbers, dtype=np.int64)[order]
        self._concept_of = np.full(int(self.numbers.max()) + 1, -1, dtype=np.int64)   # label number -> concept
        self._concept_of[self.numbers] = np.arange(len(self.numbers))

    def _primary_category(self, field: str, line: int) -> int:
        best, best_count = None, -1
        for entry in filter(None, (part.strip() for part in field.split(";"))):
            match = _LABEL_CATEGORY.fullmatch(entry)
            if match is None or match.group(1) not in self.categories:
                raise BrodenError(f"label.csv line {line}: category {entry!r} is not one of category.csv's "
                                  f"({', '.join(self.categories)})")
            count = int(match.group(2) or 0)
            if count > best_count:
                best, best_count = self.categories.index(match.group(1)), count
        if best is None:
            raise BrodenError(f"label.csv line {line}: no category given")
        return best

    def _check_category_file(self, category: str) -> None:
        path = self.folder / f"c_{category}.csv"
        if not path.is_file():
            return
        for line, row in _rows(path, ["code", "number", "name"]):
            number = _integer(row["number"], path.name, line, "number")
            concept = self._concept_of[number] if number < len(self._concept_of) else -1
            if concept < 0:
                raise BrodenError(f"{path.name} line {line}: label number {number} is not in label.csv")
            if self.concepts[concept] != row["name"]:
                raise BrodenError(f"{path.name} line {line}: label {number} is {row['name']!r} here but "
                                  f"{self.concepts[concept]!r} in label.csv")

    def _read_index(self, split: str | None) -> list[Record]:
        records = []
        for line, row in _rows(self.folder / "index.csv", INDEX_COLUMNS):
            if split is not None and row["split"] != split:
                continue
            sizes = [_integer(row[c], "index.csv", line, c, positive=True) for c in ("ih", "iw", "sh", "sw")]
            maps, concepts = [], []
            for category in row:
                if category in INDEX_COLUMNS:
                    continue
                if category not in self.categories:
                    raise BrodenError(f"index.csv line 1: column {category!r} is not a category of category.csv "
                                      f"({', '.join(self.categories)})")
                for entry in filter(None, (part.strip() for part in row[category].split(";"))):
                    if _INTEGER.fullmatch(entry):
                        concepts.append(self._concept(int(entry), f"index.csv line {line} ({category})"))
                    else:
                        maps.append(self._inside(entry, line))
            records.append(Record(self._inside(row["image"], line), row["split"], (sizes[0], sizes[1]),
                                  (sizes[2], sizes[3]), tuple(dict.fromkeys(maps)), tuple(dict.fromkeys(concepts)),
                                  line))
        return records

    def _concept(self, number: int, where: str) -> int:
        concept = self._concept_of[number] if number < len(self._concept_of) else -1
        if concept < 0:
            raise BrodenError(f"{where}: label number {number} is not in label.csv")
        return int(concept)

    def _inside(self, name: str, line: int) -> str:
        normal = os.path.normpath(name)
        if not name or os.path.isabs(normal) or normal.split(os.sep)[0] == os.pardir:
            raise BrodenError(f"index.csv line {line}: {name!r} is not a path inside images/")
        return normal

    # -- reading -----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    @cached_property
    def label_size(self) -> tuple[int, int]:
        """(sh, sw) of every label map; a dataset mixing sizes is refused."""
        return self._common("label_size", "sh, sw")

    @cached_property
    def image_size(self) -> tuple[int, int]:
        """(ih, iw) of every image; a dataset mixing sizes is refused."""
        return self._common("size", "ih, iw")

    def _common(self, field: str, columns: str) -> tuple[int, int]:
        first = getattr(self.records[0], field)
        for record in self.records:
            if getattr(record, field) != first:
                raise BrodenError(f"index.csv line {record.line}: {columns} = {getattr(record, field)} differ from "
                                  f"{first} on line {self.records[0].line}; batches need one size")
        return first

    def _open(self, name: str, line: int) -> Image.Image:
        path = self.folder / "images" / name
        try:
            image = Image.open(path)
            image.load()
        except FileNotFoundError:
            raise BrodenError(f"images/{name}: file not found (index.csv line {line})") from None
        except OSError as error:
            raise BrodenError(f"images/{name}: not a readable image ({error}) (index.csv line {line})") from None
        return image

    def image(self, item: int) -> np.ndarray:
        """uint8 `[ih, iw, 3]` RGB pixels of item `item`."""
        record = self.records[item]
        image = self._open(record.image, record.line).convert("RGB")
        if image.size[::-1] != record.size:
            raise BrodenError(f"images/{record.image}: {image.height}x{image.width} pixels, index.csv line "
                              f"{record.line} says ih, iw = {record.size}")
        return np.asarray(image)

    def label_maps(self, item: int) -> np.ndarray:
        """int32 `[maps, sh, sw]` concept index + 1 per pixel (0: none) of item `item`."""
        record = self.records[item]
        maps = np.zeros((len(record.maps), *record.label_size), dtype=np.int32)
        for k, name in enumerate(record.maps):
            image = self._open(name, record.line)
            if image.mode not in ("RGB", "RGBA", "L", "I", "I;16"):
                image = image.convert("RGB")
            pixels = np.asarray(image).astype(np.int64)
            numbers = pixels[..., 0] + 256 * pixels[..., 1] if pixels.ndim == 3 else pixels
            if numbers.shape != record.label_size:
                raise BrodenError(f"images/{name}: {numbers.shape[0]}x{numbers.shape[1]} pixels, index.csv line "
                                  f"{record.line} says sh, sw = {record.label_size}")
            known = numbers < len(self._concept_of)
            concepts = np.full(numbers.shape, -1, dtype=np.int64)
            concepts[known] = self._concept_of[numbers[known]]
            bad = (concepts < 0) & (numbers != 0)
            if bad.any():
                raise BrodenError(f"images/{name}: label number {int(numbers[bad][0])} is not in label.csv "
                                  f"(index.csv line {record.line})")
            maps[k] = concepts + 1
        return maps

    def item_labels(self, item: int) -> np.ndarray:
        """bool `[concepts]`: the concepts labelling all of item `item`."""
        labels = np.zeros(len(self.concepts), dtype=bool)
        labels[list(self.records[item].concepts)] = True
        return labels

    def images(self, items: Sequence[int]) -> np.ndarray:
        """uint8 `[n, ih, iw, 3]` RGB pixels of `items`."""
        size = self.image_size
        return np.stack([self.image(i) for i in items]) if len(items) else np.zeros((0, *size, 3), np.uint8)

    def batch(self, items: Sequence[int]) -> BrodenBatch:
        """The images and concepts of `items`, label maps padded with empty maps to the most any item has."""
        items = np.asarray(items, dtype=np.int64)
        label_size = self.label_size       # refuses a dataset of mixed sizes
        images = self.images(items)
        maps = [self.label_maps(i) for i in items]
        labels = np.zeros((len(items), max((len(m) for m in maps), default=0), *label_size), dtype=np.int32)
        for row, item_maps in zip(labels, maps):
            row[:len(item_maps)] = item_maps
        item_labels = (np.stack([self.item_labels(i) for i in items]) if len(items)
                       else np.zeros((0, len(self.concepts)), bool))
        return BrodenBatch(items, images, labels, item_labels)

    def batches(self, batch_size: int, items: Sequence[int] | None = None) -> Iterator[BrodenBatch]:
        """`batch(...)` of consecutive chunks of `items` (default: all), `batch_size` items at a time."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        items = np.arange(len(self)) if items is None else np.asarray(items, dtype=np.int64)
        for start in range(0, len(items), batch_size):
            yield self.batch(items[start:start + batch_size])

    def identity(self) -> str:
        """A short hash of the dataset's CSV files (content) and the split kept: a cache key part."""
        digest = hashlib.sha256()
        for name in ("index.csv", "label.csv", "category.csv"):
            digest.update((self.folder / name).read_bytes())
        digest.update(repr([r.line for r in self.records]).encode())
        return digest.hexdigest()[:16]


# -- writing ----------------------------------------------------------------------------------------------------


def label_image(numbers: np.ndarray) -> Image.Image:
    """Label numbers `[h, w]` (0: none) as a Broden label PNG image: R = number % 256, G = number // 256."""
    numbers = np.asarray(numbers)
    if numbers.ndim != 2 or numbers.dtype.kind not in "iu" or numbers.min() < 0 or numbers.max() >= 65536:
        raise ValueError(f"numbers must be a 2-D array of integers in 0..65535, got {numbers.dtype} "
                         f"{numbers.shape}")
    pixels = np.zeros((*numbers.shape, 3), np.uint8)
    pixels[..., 0], pixels[..., 1] = numbers % 256, numbers // 256
    return Image.fromarray(pixels)


def write_tables(folder: str | os.PathLike, categories: Sequence[str], labels: Sequence[tuple[str, str]],
                 frequency: Sequence[int], index: Sequence[dict[str, object]]) -> None:
    """Write index.csv, label.csv, category.csv and c_<category>.csv into `folder`.

    `labels` are (name, category) pairs numbered from 1 in order, `frequency` the number of images each
    appears in; `index` rows map INDEX_COLUMNS and the categories to cell values (lists are ';'-joined).
    """
    folder = Path(folder)
    numbered = [(number, name, category, count)
                for number, ((name, category), count) in enumerate(zip(labels, frequency), 1)]

    def write(name: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        with open(folder / name, "w", encoding="utf-8", newline="") as file:
            writer = csv.writer(file, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)

    write("label.csv", ["number", "name", "category", "frequency", "coverage", "syns"],
          [[number, name, f"{category}({count})", count, "", ""] for number, name, category, count in numbered])
    category_rows = []
    for category in categories:
        members = [row for row in numbered if row[2] == category]
        write(f"c_{category}.csv", ["code", "number", "name", "frequency", "coverage"],
              [[code, number, name, count, ""] for code, (number, name, _, count) in enumerate(members, 1)])
        numbers = [row[0] for row in members]
        category_rows.append([category, min(numbers, default=0), max(numbers, default=0), len(members),
                              sum(row[3] for row in members)])
    write("category.csv", ["name", "first", "last", "count", "frequency"], category_rows)
    columns = [*INDEX_COLUMNS, *categories]
    write("index.csv", columns, [[";".join(map(str, value)) if isinstance(value, (list, tuple)) else value
                                  for value in (row.get(column, "") for column in columns)] for row in index])
