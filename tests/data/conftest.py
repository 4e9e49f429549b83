"""Small fixtures in the exact on-disk layouts of the real data sets (none can be downloaded).

Each factory writes a few tiny images and masks whose label values are known, so the tests can
check that each reader returns exactly those labels for exactly those images.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest

from fcn_edge.data import voc_palette, write_palette_png
from support import smooth_image, write_gray, write_rgb

H, W = 24, 32  # fixture image size (odd aspect so transposed arrays would be caught)


def _image(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return smooth_image(seed, h, w)


def _mask(seed: int, values: tuple[int, ...], h: int = H, w: int = W) -> np.ndarray:
    """Blocks of ``values`` (each appears), with a 255 border like VOC's object outlines."""
    rng = np.random.default_rng(seed)
    blocks = rng.permutation(np.resize(np.asarray(values, np.uint8), 12)).reshape(3, 4)
    mask = cv2.resize(blocks, (w, h), interpolation=cv2.INTER_NEAREST)
    mask[0, :] = 255
    return mask


@pytest.fixture
def make_voc(tmp_path: Path) -> Callable[..., dict]:
    """VOC layout; returns {"root", "base", "masks": {id: mask}, "images": {id: image}}."""
    def make(ids=("2007_000032", "2007_000039", "2008_000002"), nested: bool = False,
             mask_dir: str = "SegmentationClass", splits=("train",)) -> dict:
        root = tmp_path / "voc"
        base = root / "VOCdevkit" / "VOC2012" if nested else root
        masks, images = {}, {}
        for i, name in enumerate(ids):
            images[name], masks[name] = _image(i), _mask(i, (0, 1, 15, 20))
            write_rgb(base / "JPEGImages" / f"{name}.jpg", images[name])
            write_palette_png(base / mask_dir / f"{name}.png", masks[name], voc_palette(256))
        sets = base / "ImageSets" / "Segmentation"
        sets.mkdir(parents=True, exist_ok=True)
        for split in splits:
            (sets / f"{split}.txt").write_text("".join(f"{n}\n" for n in ids))
        return {"root": root, "base": base, "masks": masks, "images": images}
    return make


@pytest.fixture
def make_sbd(tmp_path: Path) -> Callable[..., dict]:
    """SBD release layout (benchmark_RELEASE/dataset/{cls,img,train.txt,val.txt})."""
    def make(ids=("2008_000002", "2008_000003")) -> dict:
        savemat = pytest.importorskip("scipy.io").savemat  # scipy: the 'train' extra
        root = tmp_path / "sbd"
        base = root / "benchmark_RELEASE" / "dataset"
        masks = {}
        for i, name in enumerate(ids):
            masks[name] = _mask(i, (0, 3, 7, 20))
            masks[name][0, :] = 0  # SBD's cls masks have no 255 border
            write_rgb(base / "img" / f"{name}.jpg", _image(i))
            (base / "cls").mkdir(parents=True, exist_ok=True)
            savemat(base / "cls" / f"{name}.mat", {"GTcls": {
                "Segmentation": masks[name], "Boundaries": np.zeros(1), "CategoriesPresent":
                np.unique(masks[name])[1:].astype(np.uint8)}})
        (base / "train.txt").write_text("".join(f"{n}\n" for n in ids))
        (base / "val.txt").write_text(f"{ids[-1]}\n")
        return {"root": root, "base": base, "masks": masks}
    return make


@pytest.fixture
def make_cityscapes(tmp_path: Path) -> Callable[..., dict]:
    """Cityscapes layout, two cities; masks cycle through ``label_ids`` (raw labelIds)."""
    def make(label_ids=(0, 4, 7, 8, 11, 17, 24, 26, 33, 29), split: str = "train") -> dict:
        root = tmp_path / "cityscapes"
        masks = {}
        for city, n in (("aachen", 2), ("bochum", 1)):
            for frame in range(n):
                name = f"{city}_{frame:06d}_000019"
                raw = np.resize(np.asarray(label_ids, np.uint8), (H, W))
                masks[name] = raw
                write_rgb(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png",
                           _image(frame))
                write_gray(root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png", raw)
        return {"root": root, "masks": masks}
    return make


@pytest.fixture
def make_folder(tmp_path: Path) -> Callable[..., dict]:
    """images/ + masks/ (optionally per split), grayscale or palette masks."""
    def make(names=("a", "b", "c"), splits=(None,), classes: tuple[str, ...] | None = None,
             palette_masks: bool = False, values=(0, 1, 2)) -> dict:
        root = tmp_path / "folder"
        masks = {}
        for split in splits:
            sub = Path(split) if split else Path()
            for i, name in enumerate(names):
                masks[(split, name)] = _mask(i, values)
                write_rgb(root / "images" / sub / f"{name}.png", _image(i))
                path = root / "masks" / sub / f"{name}.png"
                if palette_masks:
                    write_palette_png(path, masks[(split, name)])
                else:
                    write_gray(path, masks[(split, name)])
        if classes is not None:
            (root / "classes.txt").write_text("\n".join(classes) + "\n")
        return {"root": root, "masks": masks}
    return make


@pytest.fixture
def fixture_image() -> Callable[..., np.ndarray]:
    return _image


@pytest.fixture
def fixture_mask() -> Callable[..., np.ndarray]:
    return _mask
