"""The units demo: a concept dataset composed from real offline images, a small CNN trained on it, and its dissection.

Images (64 x 64) show one object with an exact mask on a real background:

- objects: Fashion-MNIST items (Debian's dataset-fashion-mnist) of the seven classes that differ in shape
  (T-shirt, trouser, dress, sandal, sneaker, bag, ankle boot; pullover, coat and shirt are left out, being
  near copies of the T-shirt at 28 x 28), or scikit-learn's bundled 8 x 8 digits when that package is
  missing. Each is scaled to 24-56 pixels, placed anywhere it fits, and tinted with a random colour
  shaded by its grey levels; its mask is where its grey level is at least `MASK_LEVEL`.
- backgrounds: random crops of scikit-image's bundled photos and textures (`BACKGROUNDS`).

Concepts (Broden categories): `object` (the item's class, at its mask), `part` (its top and bottom half: the
mask above and below the middle row of its bounding box), `texture` (the background texture where it
shows, on texture backgrounds), `color` (every pixel, named as Broden does: the nearest of eleven colour
prototypes in CIELAB), `scene` (the background picture, image level). The dataset (all images composed
from Fashion-MNIST's test items, split "val") is written in the Broden layout under `dataset/`; the model
trains on other images composed the same way from the training items (kept in memory, flipped at random) and
is measured on the dataset (held out: 90.6% accuracy for the full build, 3000 images).
"""
from __future__ import annotations

import gzip
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from seqvis.demo import torch_threads
from seqvis.progress import Progress

SIZE = 64
MASK_LEVEL = 40
BACKGROUND_SIDE = 256
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = {0: "t-shirt", 1: "trouser", 3: "dress", 5: "sandal", 7: "sneaker", 8: "bag", 9: "ankle boot"}
# (concept name, skimage.data loader, kind): textures are pixel concepts where they show, every source a scene
BACKGROUNDS = (("brick", "brick", "texture"), ("grass", "grass", "texture"), ("gravel", "gravel", "texture"),
               ("craters", "moon", "texture"), ("cells", "immunohistochemistry", "texture"),
               ("stars", "hubble_deep_field", "texture"),
               ("astronaut", "astronaut", "photo"), ("coffee", "coffee", "photo"), ("cat", "chelsea", "photo"),
               ("rocket", "rocket", "photo"), ("motorcycle", "stereo_motorcycle", "photo"),
               ("cameraman", "camera", "photo"))
# Broden's eleven colour names with prototype sRGB values; a pixel takes the nearest in CIELAB
COLORS = {"black": (20, 20, 20), "white": (245, 245, 245), "grey": (128, 128, 128), "red": (200, 30, 30),
          "orange": (240, 140, 20), "yellow": (240, 220, 40), "green": (50, 150, 50), "blue": (40, 80, 200),
          "purple": (120, 50, 160), "pink": (240, 150, 190), "brown": (120, 75, 40)}
TINTS = ("white", "red", "orange", "yellow", "green", "blue", "purple", "pink")


# -- sources ---------------------------------------------------------------------------------------------------


@dataclass
class Objects:
    """Grey object images `[n, h, w]` uint8 with class ids, a training and a test part, and the class names."""
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    names: list[str]
    source: str


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format: magic, dimension sizes, uint8 data), gzip-compressed."""
    with gzip.open(path, "rb") as file:
        data = file.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_objects(folder: Path = FASHION_DIR) -> Objects:
    """Fashion-MNIST's shape-distinct classes from `folder`, else scikit-learn's digits (split 80/20)."""
    files = {part: folder / f"{part}-idx{3 if 'images' in part else 1}-ubyte.gz"
             for part in ("train-images", "train-labels", "t10k-images", "t10k-labels")}
    if all(path.is_file() for path in files.values()):
        arrays = {part: _read_idx(path) for part, path in files.items()}
        keep = np.array(sorted(FASHION_CLASSES))
        renumber = np.full(10, -1)
        renumber[keep] = np.arange(len(keep))
        parts = []
        for split in ("train", "t10k"):
            labels = arrays[f"{split}-labels"]
            chosen = np.isin(labels, keep)
            parts += [arrays[f"{split}-images"][chosen], renumber[labels[chosen]]]
        return Objects(*parts, [FASHION_CLASSES[k] for k in keep], f"Fashion-MNIST ({folder})")
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    test = np.arange(len(images)) % 5 == 0
    return Objects(images[~test], digits.target[~test], images[test], digits.target[test],
                   [str(d) for d in range(10)], "scikit-learn digits")


def load_backgrounds() -> list[np.ndarray]:
    """The `BACKGROUNDS` pictures as uint8 RGB arrays, in that order, scaled to a shorter side of `BACKGROUND_SIDE`."""
    import skimage.data

    pictures = []
    for _, loader, _ in BACKGROUNDS:
        picture = getattr(skimage.data, loader)()
        picture = np.asarray(picture[0] if isinstance(picture, tuple) else picture)     # stereo pairs: the left
        if picture.ndim == 2:
            picture = np.repeat(picture[..., None], 3, axis=2)
        image = Image.fromarray(np.ascontiguousarray(picture[..., :3], dtype=np.uint8))
        scale = BACKGROUND_SIDE / min(image.size)        # crops then span 1/4 to 1/2 of the shorter side
        pictures.append(np.asarray(image.resize((round(image.width * scale), round(image.height * scale)),
                                                Image.LANCZOS)))
    return pictures


# -- composition -----------------------------------------------------------------------------------------------


@dataclass
class Composed:
    """Composed images `[n, S, S, 3]` uint8 with the object's class, mask and top-half mask, and the background."""
    images: np.ndarray
    classes: np.ndarray
    masks: np.ndarray
    top: np.ndarray
    backgrounds: np.ndarray


def compose(objects: np.ndarray, classes: np.ndarray, pictures: list[np.ndarray], rng: np.random.Generator,
            size: int = SIZE) -> Composed:
    """Paste each grey object (tinted, scaled, placed at random) on a random crop of a random background."""
    n = len(objects)
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.zeros((n, size, size), bool)
    top = np.zeros((n, size, size), bool)
    backgrounds = rng.integers(len(pictures), size=n)
    tints = np.array([COLORS[name] for name in TINTS], dtype=np.float32)
    for i in range(n):
        picture = pictures[backgrounds[i]]
        height, width = picture.shape[:2]
        crop = int(rng.integers(min(height, width) // 4, min(height, width) // 2 + 1))
        y, x = int(rng.integers(height - crop + 1)), int(rng.integers(width - crop + 1))
        background = Image.fromarray(picture[y:y + crop, x:x + crop]).resize((size, size), Image.BILINEAR)
        scale = int(rng.integers(size * 3 // 8, size * 7 // 8 + 1))
        grey = np.asarray(Image.fromarray(objects[i]).resize((scale, scale), Image.BILINEAR), dtype=np.float32)
        mask = grey >= MASK_LEVEL
        tint = np.clip(tints[rng.integers(len(tints))] + rng.normal(0, 12, 3), 0, 255)
        pixels = tint * (0.35 + 0.65 * grey[..., None] / 255)
        y, x = int(rng.integers(size - scale + 1)), int(rng.integers(size - scale + 1))
        image = np.array(background)
        image[y:y + scale, x:x + scale][mask] = np.round(pixels[mask]).astype(np.uint8)
        images[i] = image
        masks[i, y:y + scale, x:x + scale] = mask
        rows = np.flatnonzero(mask.any(axis=1))
        if len(rows):
            middle = (rows[0] + rows[-1] + 1) / 2
            top[i, y:y + scale, x:x + scale] = mask & (np.arange(scale)[:, None] < middle)
    return Composed(images, np.asarray(classes), masks, top, backgrounds)


def color_names(images: np.ndarray, chunk: int = 256) -> np.ndarray:
    """The index into `COLORS` of every pixel of uint8 RGB `images` `[n, h, w, 3]`: nearest prototype in CIELAB."""
    from skimage.color import rgb2lab

    prototypes = rgb2lab(np.array(list(COLORS.values()), dtype=np.float64)[None] / 255)[0]
    names = np.empty(images.shape[:3], np.uint8)
    for start in range(0, len(images), chunk):
        lab = rgb2lab(images[start:start + chunk] / 255.0)
        distance = ((lab[..., None, :] - prototypes) ** 2).sum(-1)
        names[start:start + chunk] = distance.argmin(-1)
    return names


# -- the model -----------------------------------------------------------------------------------------------------


def _block(inputs: int, outputs: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inputs, outputs, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(outputs),
                         nn.ReLU())


class UnitsCNN(nn.Module):
    """Four conv blocks (conv, batch norm, ReLU), the last two at 8 x 8, global average pooling and a linear head.

    Takes RGB `[n, 3, 64, 64]` in [0, 1]; the dissected layers are the blocks `conv1` (32 x 32) to `conv4` (8 x 8).
    """

    def __init__(self, classes: int, width: int = 32):
        super().__init__()
        self.conv1 = _block(3, width, 5, 2)
        self.conv2 = _block(width, 2 * width)
        self.conv3 = _block(2 * width, 4 * width)
        self.conv4 = _block(4 * width, 4 * width)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(4 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.conv2(self.pool(self.conv1(x))))
        return self.head(self.conv4(self.conv3(x)).mean(dim=(2, 3)))


LAYERS = ("conv1", "conv2", "conv3", "conv4")


def _classes() -> int:
    return len(FASHION_CLASSES) if (FASHION_DIR / "t10k-labels-idx1-ubyte.gz").is_file() else 10


def factory() -> UnitsCNN:
    """The demo's model, untrained: the architecture its model.pt fits."""
    return UnitsCNN(_classes())


@dataclass(frozen=True)
class Plan:
    """The sizes of one build. One torch thread: where the cores are shared, two threads waiting on each other
    cost several times the CPU time of one (measured: 5.8 against 1.3 ms per training image at width 24)."""
    train_images: int
    epochs: int
    dataset_images: int
    learning_rate: float
    batch: int
    threads: int


FULL = Plan(train_images=36000, epochs=7, dataset_images=3000, learning_rate=4e-3, batch=64, threads=1)
TINY = Plan(train_images=400, epochs=1, dataset_images=96, learning_rate=4e-3, batch=32, threads=1)


def _inputs(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255).contiguous(memory_format=torch.channels_last)


def train(model: UnitsCNN, data: Composed, plan: Plan, progress: Progress) -> dict:
    """AdamW with a one-cycle learning rate over `plan.epochs` epochs of `data`, in channels-last layout."""
    model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=plan.learning_rate, weight_decay=1e-4)
    per_epoch = len(data.images) // plan.batch
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, plan.learning_rate, total_steps=plan.epochs * per_epoch,
                                                   pct_start=0.15)
    targets = torch.from_numpy(data.classes).long()
    progress.start("train", plan.epochs * per_epoch)
    started, losses = time.monotonic(), []
    for _ in range(plan.epochs):
        order = torch.randperm(len(targets))
        for step in range(per_epoch):
            rows = order[step * plan.batch:(step + 1) * plan.batch]
            inputs = _inputs(data.images[rows.numpy()])
            flip = torch.rand(len(rows)) < 0.5                  # mirrored objects: free extra variety
            inputs = torch.where(flip[:, None, None, None], inputs.flip(3), inputs)
            loss = nn.functional.cross_entropy(model(inputs), targets[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            progress.update(1)
    model.eval()
    curve = [round(float(np.mean(part)), 4) for part in np.array_split(losses, min(12, len(losses)))]
    return {"images": len(targets), "epochs": plan.epochs, "batch": plan.batch, "learning_rate": plan.learning_rate,
            "optimizer": "AdamW, one-cycle", "augmentation": "horizontal flips",
            "seconds": round(time.monotonic() - started, 1), "loss": curve}


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """The predicted class of each uint8 image `[n, 64, 64, 3]`."""
    model.eval()
    return np.concatenate([model(_inputs(images[i:i + batch])).argmax(1).numpy() for i in range(0, len(images), batch)])


# -- the concept dataset ---------------------------------------------------------------------------------------------


def write_dataset(folder: Path, data: Composed, class_names: list[str], progress: Progress) -> list[tuple[str, str]]:
    """Write `data` with its concepts in the Broden layout into `folder`; return the (name, category) labels."""
    from seqvis.broden import label_image, write_tables

    textures = [name for name, _, kind in BACKGROUNDS if kind == "texture"]
    labels = ([(f"{name}-c", "color") for name in COLORS] + [(name, "object") for name in class_names]
              + [(f"{name} {half}", "part") for name in class_names for half in ("top", "bottom")]
              + [(name, "texture") for name in textures] + [(f"{name}-s", "scene") for name, _, _ in BACKGROUNDS])
    number = {name: i for i, (name, _) in enumerate(labels, 1)}
    frequency = np.zeros(len(labels) + 1, np.int64)
    images = folder / "images"
    (images / "demo").mkdir(parents=True)
    index = []
    progress.start("write the concept dataset", len(data.images))
    colours = None
    for i, image in enumerate(data.images):
        if i % 256 == 0:
            colours = color_names(data.images[i:i + 256])
        stem = f"demo/{i:05d}"
        Image.fromarray(image).save(images / f"{stem}.png")
        name = class_names[data.classes[i]]
        background, _, kind = BACKGROUNDS[data.backgrounds[i]]
        maps = {"color": colours[i % 256].astype(np.int64) + 1,      # colours are labels 1..11, in COLORS order
                "object": np.where(data.masks[i], number[name], 0),
                "part": np.where(data.top[i], number[f"{name} top"],
                                 np.where(data.masks[i], number[f"{name} bottom"], 0))}
        if kind == "texture":
            maps["texture"] = np.where(data.masks[i], 0, number[background])
        row = {"image": f"{stem}.png", "split": "val", "ih": SIZE, "iw": SIZE, "sh": SIZE, "sw": SIZE,
               "scene": [number[f"{background}-s"]]}
        for category, numbers in maps.items():
            label_image(numbers).save(images / f"{stem}_{category}.png")
            row[category] = [f"{stem}_{category}.png"]
            frequency[np.unique(numbers)] += 1
        frequency[number[f"{background}-s"]] += 1
        index.append(row)
        progress.update(1)
    write_tables(folder, ["color", "object", "part", "texture", "scene"], labels, frequency[1:].tolist(), index)
    return labels


# -- the build -------------------------------------------------------------------------------------------------------


def build(out_dir: Path, progress: Progress, tiny: bool) -> None:
    """Compose the data, train the model, measure it, dissect its layers and write the units project into `out_dir`."""
    plan = TINY if tiny else FULL
    with torch_threads(plan.threads):
        _build(Path(out_dir), progress, plan)


def _build(out_dir: Path, progress: Progress, plan: Plan) -> None:
    from seqvis import units
    from seqvis.broden import Broden

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    progress.start("read objects and backgrounds")
    objects, pictures = load_objects(), load_backgrounds()
    progress.start("compose training images")
    chosen = rng.choice(len(objects.train_images), plan.train_images, replace=False)
    training = compose(objects.train_images[chosen], objects.train_labels[chosen], pictures, rng)
    model = UnitsCNN(len(objects.names))
    report = train(model, training, plan, progress)
    del training

    progress.start("compose the concept dataset")
    chosen = rng.choice(len(objects.test_images), plan.dataset_images, replace=False)
    held_out = compose(objects.test_images[chosen], objects.test_labels[chosen], pictures, rng)
    write_dataset(out_dir / "dataset", held_out, objects.names, progress)
    predicted = predict(model, held_out.images)
    correct = predicted == held_out.classes
    per_class = {name: round(float(correct[held_out.classes == c].mean()), 4)
                 for c, name in enumerate(objects.names) if (held_out.classes == c).any()}
    accuracy = float(correct.mean())
    (out_dir / "classes.txt").write_text("".join(f"{name}\n" for name in objects.names), encoding="utf-8")
    (out_dir / "targets.csv").write_text("image,class\n" + "".join(
        f"demo/{i:05d}.png,{objects.names[c]}\n" for i, c in enumerate(held_out.classes)), encoding="utf-8")

    data = Broden(out_dir / "dataset")
    results = units.dissect(model, LAYERS, data, batch_size=100, progress=progress)
    settings = units.dissection_settings(units.QUANTILE, "plain", False, 100)
    description = (f"A 4-block CNN trained on CPU for {report['seconds'] / 60:.1f} minutes to name the object in "
                   f"{SIZE}x{SIZE} composed images ({objects.source} on scikit-image photos and textures); "
                   f"{100 * accuracy:.1f}% accuracy on {len(correct)} held-out images, which form the concept "
                   f"dataset its layers are dissected over.")
    units.write_units_project(
        out_dir, model=model, factory=f"{__name__}:factory", dataset="dataset", results=results, data=data,
        settings=settings,
        name="units-demo", description=description, files={"targets": "targets.csv", "classes": "classes.txt"},
        extra={"validation": {"accuracy": round(accuracy, 4), "images": len(correct), "per_class": per_class},
               "training": report, "objects": objects.source, "ablation_split": "val"})

