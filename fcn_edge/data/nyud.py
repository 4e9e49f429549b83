"""NYUDv2, the NYU Depth Dataset V2 (Silberman et al. 2012): 1,449 indoor RGB-D images with
dense labels, in the 40-class task of Gupta, Arbeláez & Malik (CVPR 2013) that FCN uses
(paper §5 "NYUDv2": RGB, RGB-D early fusion, HHA, and the best net, RGB-HHA late fusion).

Layout, as the FCN reference implementation reads it (``nyud_layers.py`` and
``data/nyud/{README.md,classes.txt,train.txt,val.txt,test.txt}`` of
github.com/shelhamer/fcn.berkeleyvision.org, commit 1305c7378a9f; the data is Gupta et al.'s,
repackaged as ``nyud.tar.gz``)::

    <root>/data/images/img_<id>.png   RGB, 8 bits
    <root>/data/depth/img_<id>.png    depth, 16-bit single channel, millimetres (0 = no depth)
    <root>/data/hha/img_<id>.png      HHA (optional here), 8-bit, channels in file order
                                      disparity, height, angle
    <root>/segmentation/img_<id>.mat  MATLAB file, variable ``segmentation``: H×W labels,
                                      0 = void, 1..40 = the classes of ``NYUD_CLASSES``
    <root>/<split>.txt                one id per line: the bare number (``5001``), not
                                      zero-padded, no ``img_`` prefix (train 381, val 414,
                                      test 654 ids; the paper trains on train+val = 795)

``<root>`` may also be the directory holding ``nyud/`` (the reference's ``data/nyud``).
Labels: void 0 becomes the ignore label 255 and class k becomes k-1 (0..39), as the
reference's ``label -= 1`` on uint8 does. Depth units: the reference takes ``log`` of the
PNG values and subtracts a mean of 7.844, i.e. e^7.844 ≈ 2,550, a typical indoor depth in
millimetres; we read the PNG as uint16 millimetres and return float32 metres (0 stays 0:
invalid). Sample names are the file stems (``img_5001``).

HHA (Gupta et al., ECCV 2014) is read from ``data/hha/`` when that folder exists (every listed
id must then have its file), else computed from depth by ``hha_from_depth``, a simplified
version of Gupta's ``saveHHA.m`` (see its docstring). The .mat labels need scipy (imported only
when a label file is read).
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailable, InputError
from ..runtime.modalities import DEPTH_UNITS_PER_M, MODALITIES
from .base import FileDataset, Item, Sample, list_stems, missing_error, split_ids
from .classes import IGNORE_INDEX, voc_palette
from .files import check_mask, read_file_bytes, read_image

__all__ = ["NYUDv2Segmentation", "NYUD_CLASSES", "NYUD_MODALITIES", "NYUD_PALETTE",
           "NYU_FX", "NYU_FY", "NYU_CX", "NYU_CY", "hha_from_depth", "locate_nyud", "with_hha",
           "read_nyud_depth", "read_nyud_mat"]

#: Gupta et al.'s 40 classes in model output order (label k in the .mat files is class k-1):
#: ``data/nyud/classes.txt`` of the FCN reference implementation (which spells the 24th
#: "refridgerator"; corrected here).
NYUD_CLASSES: tuple[str, ...] = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop")
NYUD_PALETTE = voc_palette(256)
#: Largest raw label in a .mat file (0 = void, 1..40 = classes).
NYUD_MAX_LABEL = len(NYUD_CLASSES)

#: What a sample holds besides the RGB image: "rgb" nothing, "rgbd" inputs["depth"],
#: "hha" and "rgb+hha" inputs["hha"] (the model decides whether it also uses the RGB image).
NYUD_MODALITIES = ("rgb", "rgbd", "hha", "rgb+hha")

#: Kinect RGB camera intrinsics of NYUDv2 (NYU Depth V2 toolbox ``camera_params.m``: fx_rgb
#: 5.1885790117450188e+02, fy_rgb 5.1946961112127485e+02, cx_rgb 3.2558244941119034e+02,
#: cy_rgb 2.5373616633400465e+02, also Gupta's ``getCameraParam('color')``), for the full
#: 640×480 frame. The toolbox's principal point is in MATLAB's 1-based pixel coordinates; here
#: pixels are 0-based (numpy), hence the -1.
NYU_FX = 518.857901
NYU_FY = 519.469611
NYU_CX = 325.582449 - 1.0
NYU_CY = 253.736166 - 1.0

IMAGES_DIR = Path("data") / "images"
DEPTH_DIR = Path("data") / "depth"
HHA_DIR = Path("data") / "hha"
LABELS_DIR = Path("segmentation")
MAT_KEY = "segmentation"
PREFIX = "img_"

# HHA encoding, as in saveHHA.m (values then rounded and saturated to 0..255 like uint8()):
_DISPARITY_SCALE_CM = 31000.0  # channel 0 = 31000 / depth in cm ...
_MIN_DEPTH_CM = 100.0          # ... with depth clamped to >= 1 m (saturates below ~1.22 m)
_ANGLE_OFFSET_DEG = 128.0 - 90.0  # channel 2 = angle + 38: horizontal 38, vertical 128


def locate_nyud(path: str | os.PathLike) -> Path | None:
    """The directory holding ``data/images/`` and ``segmentation/`` (``path`` or
    ``path/nyud``), or None."""
    path = Path(path)
    for root in (path, path / "nyud"):
        if (root / IMAGES_DIR).is_dir() and (root / LABELS_DIR).is_dir():
            return root
    return None


def read_nyud_mat(path: str | os.PathLike) -> np.ndarray:
    """The raw H×W uint8 labels (0 = void, 1..40) of a ``segmentation/img_<id>.mat`` file."""
    data = read_file_bytes(path, "label")
    try:
        from scipy.io import loadmat  # lazy: only the .mat labels need scipy
    except ImportError:
        raise BackendUnavailable("reading NYUDv2 .mat labels needs scipy: pip install scipy "
                                 "(or the 'train' extra)") from None
    try:
        contents = loadmat(io.BytesIO(data), squeeze_me=True)
    except Exception as exc:  # scipy raises ValueError, TypeError, NotImplementedError (v7.3)
        raise InputError(f"{path}: unreadable MATLAB file ({exc})") from None
    if MAT_KEY not in contents:
        found = ", ".join(k for k in contents if not k.startswith("__")) or "none"
        raise InputError(f"{path}: no variable '{MAT_KEY}' (variables: {found})")
    labels = np.asarray(contents[MAT_KEY])
    integral = np.issubdtype(labels.dtype, np.integer) or (
        np.issubdtype(labels.dtype, np.floating) and bool(np.all(np.mod(labels, 1) == 0)))
    if labels.ndim != 2 or not integral:
        raise InputError(f"{path}: '{MAT_KEY}' must be an H×W integer label map, got "
                         f"{labels.dtype} of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > NYUD_MAX_LABEL):
        bad = np.unique(labels[(labels < 0) | (labels > NYUD_MAX_LABEL)])
        shown = ", ".join(str(int(v)) for v in bad[:5]) + (" ..." if bad.size > 5 else "")
        raise InputError(f"{path}: label values {shown} are outside 0..{NYUD_MAX_LABEL} "
                         f"(0 = void, 1..{NYUD_MAX_LABEL} = the 40 classes)")
    return labels.astype(np.uint8)


def read_nyud_depth(path: str | os.PathLike) -> np.ndarray:
    """A depth PNG (16-bit, millimetres) as H×W float32 metres; 0 (no depth) stays 0. Read
    by the depth modality's own reader, as ``fcn-edge run --depth`` reads depth files."""
    depth = MODALITIES["depth"].read(Path(path))
    return depth.astype(np.float32) / np.float32(DEPTH_UNITS_PER_M[depth.dtype])


def _label_map() -> np.ndarray:
    """256-entry table: raw 0 → 255 (ignore), k → k-1 for 1..40 (read_nyud_mat refuses more)."""
    table = np.full(256, IGNORE_INDEX, np.uint8)
    table[1:NYUD_MAX_LABEL + 1] = np.arange(NYUD_MAX_LABEL, dtype=np.uint8)
    return table


def _tangent(points: np.ndarray, valid: np.ndarray, axis: int) -> np.ndarray:
    """d(points)/d(pixel) along ``axis`` from valid pixels only: the central difference where
    both neighbours are valid, a one-sided one where one is, NaN where none is."""
    pad = [(0, 0)] * 3
    pad[axis] = (1, 1)
    p = np.pad(points, pad, mode="edge")
    ok = np.pad(valid, pad[:2], mode="constant", constant_values=False)
    n = points.shape[axis]
    before = np.take(p, range(0, n), axis=axis)
    after = np.take(p, range(2, n + 2), axis=axis)
    ok_before = np.take(ok, range(0, n), axis=axis) & valid
    ok_after = np.take(ok, range(2, n + 2), axis=axis) & valid
    both = (ok_before & ok_after)[..., None]
    forward, backward = after - points, points - before
    return np.where(both, (after - before) / 2,
                    np.where(ok_after[..., None], forward,
                             np.where(ok_before[..., None], backward, np.nan)))


def hha_from_depth(depth_m: np.ndarray, fx: float = NYU_FX, fy: float = NYU_FY,
                   cx: float = NYU_CX, cy: float = NYU_CY) -> np.ndarray:
    """The HHA encoding of a depth map (Gupta, Girshick, Arbeláez & Malik, ECCV 2014) as
    H×W×3 uint8: horizontal disparity, height above ground, angle with gravity.

    ``depth_m`` is H×W metres (0, negative or non-finite = no depth); ``fx, fy, cx, cy`` are
    the pinhole intrinsics in 0-based pixels (defaults: NYUDv2's Kinect RGB camera, full
    640×480 frame). The channel scales follow Gupta's ``saveHHA.m``, each rounded and
    saturated to 0..255:

    * disparity: 31000 / depth in cm, depth clamped to >= 100 cm (255 below ~1.22 m, 31 at
      10 m);
    * height: centimetres above the lowest valid point of the scene (saturates at 2.55 m);
    * angle: degrees between the surface normal (facing the camera) and "up", plus 38:
      floors 38, walls 128, ceilings 218.

    Simplifications (honest ones, documented): gravity is taken as the camera's +y axis (image
    rows grow downwards, so "up" is -y): an upright, level camera. The original estimates the
    gravity direction iteratively from the normals (aligning it with the normals most nearly
    parallel and perpendicular to the current estimate, 45° then 15° thresholds), so it handles
    tilted cameras. Normals here are the cross product of the back-projected points' finite
    differences along rows and columns (using only valid neighbours), not the original's
    least-squares plane fits over 3×3 / 10×10 patches, so they are noisier at depth edges.
    The height reference is the lowest valid point (the original uses the same minimum).
    Pixels without depth get 0 in all three channels; a valid pixel whose normal cannot be
    estimated (no valid neighbour along rows or columns) gets angle 0.
    """
    depth = np.asarray(depth_m, dtype=np.float64)
    if depth.ndim != 2:
        raise InputError(f"hha_from_depth: depth must be an H×W array of metres, got shape "
                         f"{depth.shape}")
    if not all(np.isfinite(v) for v in (fx, fy, cx, cy)) or fx <= 0 or fy <= 0:
        raise InputError(f"hha_from_depth: focal lengths must be positive and intrinsics finite,"
                         f" got fx={fx}, fy={fy}, cx={cx}, cy={cy}")
    h, w = depth.shape
    valid = np.isfinite(depth) & (depth > 0)
    hha = np.zeros((h, w, 3), np.uint8)
    if not valid.any():
        return hha
    z = np.where(valid, depth, 0.0) * 100.0  # centimetres
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    points = np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], axis=-1)

    disparity = _DISPARITY_SCALE_CM / np.maximum(z, _MIN_DEPTH_CM)
    up = -points[..., 1]
    height = up - up[valid].min()

    normals = np.cross(_tangent(points, valid, 1), _tangent(points, valid, 0))
    length = np.linalg.norm(normals, axis=-1)
    has_normal = valid & np.isfinite(length) & (length > 1e-12)
    with np.errstate(invalid="ignore", divide="ignore"):
        normals = normals / length[..., None]
    # Face the camera: a visible surface's normal points back towards the optical centre.
    facing = np.where(np.sum(normals * points, axis=-1) > 0, -1.0, 1.0)[..., None]
    cos_up = np.clip(-(normals * facing)[..., 1], -1.0, 1.0)  # normal · (0, -1, 0)
    angle = np.degrees(np.arccos(np.where(has_normal, cos_up, 1.0))) + _ANGLE_OFFSET_DEG

    for channel, values, where in ((0, disparity, valid), (1, height, valid),
                                   (2, angle, has_normal)):
        hha[..., channel] = np.where(where, np.clip(np.rint(np.where(where, values, 0)), 0, 255),
                                     0).astype(np.uint8)
    return hha


class NYUDv2Segmentation(FileDataset):
    """NYUDv2, 40 classes; ``split`` is a name (train, val, test, or any ``<root>/<name>.txt``,
    e.g. a trainval list) or a path to an id list; ``modality`` one of ``NYUD_MODALITIES``.

    ``Sample.image`` is always the RGB image and ``Sample.mask`` the 40-class labels (void =
    255); ``Sample.inputs`` holds ``depth`` (float32 metres) for "rgbd" and ``hha`` (H×W×3
    uint8) for "hha" and "rgb+hha" (None for "rgb"); ``Sample.masks`` is {"semantic": mask}.
    ``hha_source`` says where HHA comes from: "files" (``data/hha/``) or "depth" (computed).
    """

    layout = "nyud"

    def __init__(self, root: str | os.PathLike, split: str | os.PathLike = "train",
                 modality: str = "rgb") -> None:
        if modality not in NYUD_MODALITIES:
            raise InputError(f"unknown NYUDv2 modality {modality!r}; choose one of "
                             f"{', '.join(NYUD_MODALITIES)}")
        base = locate_nyud(root)
        if base is None:
            raise InputError(f"{root}: not an NYUDv2 directory: needs {IMAGES_DIR}/ and "
                             f"{LABELS_DIR}/ (directly or under nyud/)")
        split_file, ids = split_ids(split, [base])
        names = [i if i.startswith(PREFIX) else f"{PREFIX}{i}" for i in ids]
        self.modality = modality
        self.hha_source = None
        needed = [(IMAGES_DIR, ".png"), (LABELS_DIR, ".mat")]
        if modality == "rgbd":
            needed.append((DEPTH_DIR, ".png"))
        elif modality in ("hha", "rgb+hha"):
            self.hha_source = "files" if (base / HHA_DIR).is_dir() else "depth"
            needed.append((HHA_DIR if self.hha_source == "files" else DEPTH_DIR, ".png"))
        found = {}
        for directory, suffix in needed:
            found[directory] = list_stems(base / directory, (suffix,))
            missing = [base / directory / f"{n}{suffix}" for n in names
                       if n not in found[directory]]
            if missing:
                raise missing_error(missing, str(split_file))
        items = [Item(n, found[IMAGES_DIR][n], found[LABELS_DIR][n]) for n in names]
        super().__init__(items, NYUD_CLASSES, NYUD_PALETTE, base, split_file.stem,
                         label_map=_label_map())
        self.split_file = split_file

    def read_mask(self, path: Path) -> np.ndarray:
        return read_nyud_mat(path)

    def _extra(self, name: str, image_path: Path, shape: tuple[int, ...]) -> dict | None:
        if self.modality == "rgb":
            return None
        if self.modality == "rgbd" or self.hha_source == "depth":
            path = self.root / DEPTH_DIR / f"{name}.png"
            depth = read_nyud_depth(path)
            _check_size(path, depth.shape, "depth", image_path, shape)
            if self.modality == "rgbd":
                return {"depth": depth}
            return {"hha": hha_from_depth(depth)}
        path = self.root / HHA_DIR / f"{name}.png"
        hha = MODALITIES["hha"].read(path)  # in file channel order: disparity, height, angle
        _check_size(path, hha.shape, "HHA image", image_path, shape)
        return {"hha": hha}

    def __getitem__(self, index: int) -> Sample:
        item = self.items[self._index(index)]
        image = read_image(item.image)
        mask = self.label_map[self.read_mask(item.mask)]
        check_mask(mask, image.shape, self.num_classes, item.mask, item.image, self.ignore_index)
        inputs = self._extra(item.name, item.image, image.shape)
        return Sample(image, mask, item.name, inputs, {"semantic": mask})

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root='{self.root}', split='{self.split}', "
                f"modality='{self.modality}', {len(self)} images, {self.num_classes} classes)")


def _check_size(path: Path, shape: tuple[int, ...], what: str, image_path: Path,
                image_shape: tuple[int, ...]) -> None:
    if tuple(shape[:2]) != tuple(image_shape[:2]):
        raise InputError(f"{path}: {what} is {shape[0]}×{shape[1]} but its image {image_path} "
                         f"is {image_shape[0]}×{image_shape[1]}; they must match exactly")


def with_hha(sample: Sample, modalities) -> Sample:
    """``sample`` with HHA computed from its depth (``hha_from_depth``, NYUDv2's intrinsics)
    when ``modalities`` take HHA and the data set gives only depth (e.g. ``synthetic-rgbd``);
    otherwise ``sample`` itself. Training and the export's checks both use it."""
    inputs = sample.inputs or {}
    if "hha" not in modalities or "hha" in inputs or "depth" not in inputs:
        return sample
    return sample._replace(inputs={**inputs, "hha": hha_from_depth(inputs["depth"])})
