"""Compact, exact per-mask data for fast association: bit-packed mask, area and box.

A tracker step compares every detection's mask with every track's last mask. A 512x512
bool mask is 256 KiB; reading it costs ~10-20 us on these CPUs (memory bound), and pairwise
work on full masks far more. So each mask is read once, inside its box when the producer
knows it (post-processing does), and packed to bits (8x smaller, `np.packbits`); its exact
area and tight box come from the packed rows, and only the rows and words of the box are
kept. The IoU of two masks is then computed exactly, and only where it can be non-zero: the
intersection is counted with AND + popcount on the packed rows inside the intersection of
the two boxes, for the pairs whose boxes overlap. No approximation: `pairwise_iou` equals
pycocotools' mask IoU (tested), and scripts/bench_tracker.py measures its cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from metaseg_ros.results import BoundingBox

# Set bits per byte value, for numpy < 2.0 (np.bitwise_count is new in numpy 2.0; apt ROS 2
# installs keep the distribution's numpy 1.x, which their compiled message modules need).
_BITS_IN_BYTE = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)


def _count_bits_lookup(words: np.ndarray) -> int:
    """Set bits in an array of uint64 words, by a byte lookup table."""
    return int(_BITS_IN_BYTE[np.ascontiguousarray(words).view(np.uint8)].sum(dtype=np.int64))


def _count_bits_native(words: np.ndarray) -> int:
    """Set bits in an array of uint64 words (np.bitwise_count, numpy >= 2.0)."""
    return int(np.bitwise_count(words).sum(dtype=np.int64))


count_bits = _count_bits_native if hasattr(np, "bitwise_count") else _count_bits_lookup


class MaskSummary(NamedTuple):
    """A (height, width) mask packed to bits along rows inside its box, with its exact area
    and tight box (a NamedTuple: built ~20 times per frame, it must be cheap to make).

    words: the packed rows [top, bottom) of the box, in 64-bit words [word0, word0 +
        words.shape[1]) of the full row (row bits of `np.packbits(mask, axis=1)`, big-endian,
        zero-padded to whole words); (0, 0) for an empty mask.
    row0, word0: where `words` starts in the full packed mask (row, word column).
    box_row: (x0, y0, x1, y1, height << 32 | width): the half-open box and the image size
        in one tuple, as BoxOverlap reads it.
    """

    height: int
    width: int
    area: int
    bbox: BoundingBox
    words: np.ndarray
    row0: int
    word0: int
    box_row: tuple[int, int, int, int, int]


def _pack_rows(mask: np.ndarray) -> np.ndarray:
    """(h, w) bool -> (h, ceil(w / 64)) uint64 of its packed rows (np.packbits, zero-padded)."""
    height, width = mask.shape
    if width % 64 == 0:
        # Rows are whole words: no padding (and a contiguous mask packs as one flat array).
        packed = np.packbits(mask.reshape(-1) if mask.flags.c_contiguous else mask,
                             axis=-1).reshape(height, width // 8)
    else:
        row_bytes = np.packbits(mask, axis=1)
        # Zero-pad the rows to whole words (np.pad costs ~15 us; this ~1 us).
        packed = np.zeros((height, -(-row_bytes.shape[1] // 8) * 8), dtype=np.uint8)
        packed[:, :row_bytes.shape[1]] = row_bytes
    return packed.view(np.uint64)


def summarize_mask(mask: np.ndarray, bbox: BoundingBox | None = None) -> MaskSummary:
    """Pack a (H, W) boolean mask and measure its exact area (and tight box).

    bbox: the tight box of the mask when the producer knows it (Detection.bbox:
        post-processing computes it for a few microseconds per mask), so that only that part
        of the mask is read and nothing is searched: ~7 us instead of ~20 for a 512x512
        mask. Pixels outside it are ignored. None: the whole mask is read (once) and its box
        found from the packed rows.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a (H, W) mask, got shape {mask.shape}")
    height, width = mask.shape
    mask = mask.astype(np.bool_, copy=False)
    size_code = height << 32 | width
    if bbox is not None:
        return _summarize_box(mask, bbox, size_code)
    words = _pack_rows(mask)
    words_per_row = words.shape[1]
    occupied = words.reshape(-1) != 0
    first_word = int(occupied.argmax()) if occupied.size else 0  # stops at the first True
    if not occupied.size or not occupied[first_word]:
        return _empty(height, width, size_code)
    top = first_word // words_per_row
    bottom = (occupied.size - 1 - int(occupied[::-1].argmax())) // words_per_row + 1
    band = words[top:bottom]
    area = count_bits(band)
    # Columns of the band ORed together, read as big-endian integers: the most significant
    # bit is the leftmost pixel of the word (np.packbits is big-endian), on any host.
    columns = np.bitwise_or.reduce(band, axis=0).view(">u8").tolist()
    filled = [index for index, word in enumerate(columns) if word]
    first, last = filled[0], filled[-1]
    left = 64 * first + 64 - columns[first].bit_length()
    lowest_bit = columns[last] & -columns[last]
    right = 64 * last + 65 - lowest_bit.bit_length()  # exclusive
    return MaskSummary(height, width, area, BoundingBox(left, top, right - left, bottom - top),
                       band[:, first:last + 1], top, first,
                       (left, top, right, bottom, size_code))


def _summarize_box(mask: np.ndarray, bbox: BoundingBox, size_code: int) -> MaskSummary:
    """summarize_mask for a mask whose tight box is known: pack the box's rows, from the
    word holding its left edge (so bits keep their place in the row), and count them."""
    height, width = mask.shape
    left, top, right, bottom = bbox.clipped(height, width)
    if right <= left or bottom <= top:
        return _empty(height, width, size_code)
    word0 = left // 64
    # To the end of the word holding the right edge: whole words, no padding (but at the
    # image's right edge).
    words = _pack_rows(mask[top:bottom, 64 * word0:min(-(-right // 64) * 64, width)])
    box = bbox if (left, top, right, bottom) == (bbox.x, bbox.y, bbox.x + bbox.width,
                                                 bbox.y + bbox.height) \
        else BoundingBox(left, top, right - left, bottom - top)
    return MaskSummary(height, width, count_bits(words), box, words, top, word0,
                       (left, top, right, bottom, size_code))


def _empty(height: int, width: int, size_code: int) -> MaskSummary:
    return MaskSummary(height, width, 0, BoundingBox(0, 0, 0, 0),
                       np.zeros((0, 0), dtype=np.uint64), 0, 0, (0, 0, 0, 0, size_code))


@dataclass(frozen=True, slots=True, eq=False)
class BoxOverlap:
    """Intersections of the boxes of two lists of masks, as (len(first), len(second)) arrays:
    half-open rows [top, bottom) and columns [left, right); `valid` where the boxes overlap
    and the two masks have the same image size."""

    top: np.ndarray
    bottom: np.ndarray
    left: np.ndarray
    right: np.ndarray
    valid: np.ndarray

    @classmethod
    def of(cls, first: list[MaskSummary], second: list[MaskSummary]) -> BoxOverlap:
        """The box intersections of every (first[i], second[j]) pair."""
        a = np.array([s.box_row for s in first], dtype=np.int64).reshape(-1, 5)
        b = np.array([s.box_row for s in second], dtype=np.int64).reshape(-1, 5)
        low = np.maximum(a[:, None, :2], b[None, :, :2])
        high = np.minimum(a[:, None, 2:4], b[None, :, 2:4])
        valid = (low[..., 0] < high[..., 0]) & (low[..., 1] < high[..., 1]) \
            & (a[:, None, 4] == b[None, :, 4])
        return cls(low[..., 1], high[..., 1], low[..., 0], high[..., 0], valid)

    @property
    def area(self) -> np.ndarray:
        """Pixels in each box intersection (0 where not valid): bounds the masks' intersection."""
        return np.where(self.valid, (self.bottom - self.top) * (self.right - self.left), 0)


def pairwise_intersection(first: list[MaskSummary], second: list[MaskSummary],
                          pairs: np.ndarray | None = None,
                          overlap: BoxOverlap | None = None) -> np.ndarray:
    """(len(first), len(second)) int64 pixel counts of the masks' intersections.

    Only pairs whose boxes overlap are counted (AND + popcount of the packed rows inside the
    intersection of the two boxes); pairs of different image sizes count 0. With `pairs`
    (a boolean matrix of the same shape) only those pairs are counted, the others are 0.
    `overlap`: BoxOverlap.of(first, second), if the caller has it already.
    """
    result = np.zeros((len(first), len(second)), dtype=np.int64)
    if not first or not second:
        return result
    overlap = overlap or BoxOverlap.of(first, second)
    candidates = overlap.valid if pairs is None else overlap.valid & pairs
    rows, cols = np.nonzero(candidates)
    top, bottom = overlap.top[rows, cols].tolist(), overlap.bottom[rows, cols].tolist()
    first_word = (overlap.left[rows, cols] // 64).tolist()
    end_word = ((overlap.right[rows, cols] + 63) // 64).tolist()
    for i, j, y0, y1, w0, w1 in zip(rows.tolist(), cols.tolist(), top, bottom, first_word,
                                    end_word, strict=True):
        a, b = first[i], second[j]  # windows of both in their own packed boxes
        result[i, j] = count_bits(a.words[y0 - a.row0:y1 - a.row0, w0 - a.word0:w1 - a.word0]
                                  & b.words[y0 - b.row0:y1 - b.row0, w0 - b.word0:w1 - b.word0])
    return result


def pairwise_iou(first: list[MaskSummary], second: list[MaskSummary],
                 pairs: np.ndarray | None = None,
                 overlap: BoxOverlap | None = None) -> np.ndarray:
    """(len(first), len(second)) exact mask IoU (only of `pairs`, if given; 0 elsewhere).

    Pairs of different image sizes and pairs involving an empty mask get IoU 0.
    """
    intersection = pairwise_intersection(first, second, pairs, overlap).astype(np.float64)
    areas_a = np.array([s.area for s in first], dtype=np.float64)
    areas_b = np.array([s.area for s in second], dtype=np.float64)
    union = areas_a[:, None] + areas_b[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)
