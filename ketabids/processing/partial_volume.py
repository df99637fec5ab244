"""Partial-volume (PV) tissue fractions from a T1w and a three-class labelling (pure numpy).

A voxel's GM value is the fraction of its volume that is grey matter, read from its intensity,
as in FSL FAST's PVE and CAT12's AMAP: tissues mix linearly, so a voxel between two adjacent
classes with pure means ``mu_a`` and ``mu_b`` holds ``(y - mu_a) / (mu_b - mu_a)`` of tissue ``b``.
The labelling (from Atropos, whose template priors only initialise it) decides which voxels are
mixed and which two classes they mix:

* pure means are the mean intensities of interior voxels (all six neighbours share the label),
  so border voxels, whose intensity is a mixture, do not bias them;
* only border voxels (a neighbour has another label) get fractions from their intensity; interior
  voxels are pure. This avoids the noise-clipping bias of reading every voxel's intensity (noise
  around a pure mean, clipped to [0, 1], would take a few % from every pure voxel);
* a border voxel next to GM mixes CSF/GM when darker than the GM mean, GM/WM when brighter;
  one whose neighbourhood holds WM and CSF but no GM (ventricle walls) mixes WM/CSF, so the
  intermediate intensity of that border is not read as GM.

Deep grey nuclei (thalamus, caudate, putamen, pallidum, accumbens) have a T1w intensity between
cortical GM and WM and no contrast to the surrounding WM that a three-class model could use
consistently, so inside their labels (``deep_gm``, brought from the template) all non-CSF tissue
counts as GM; their CSF fraction still follows the image.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

GM, WM, CSF = 1, 2, 3  # labels of the hard segmentation (dseg)
_SIX = ndimage.generate_binary_structure(3, 1)


def pure_means(t1w: np.ndarray, labels: np.ndarray, exclude: np.ndarray | None = None) -> dict[int, float]:
    """Mean T1w intensity of the interior voxels of each label (GM, WM, CSF).

    Voxels in ``exclude`` (e.g. deep grey nuclei) are left out; a label without interior voxels
    falls back to all its voxels.
    """
    keep = np.ones(labels.shape, bool) if exclude is None else ~exclude
    means = {}
    for label in (GM, WM, CSF):
        tissue = (labels == label) & keep
        interior = ndimage.binary_erosion(tissue, _SIX) & keep
        values = t1w[interior] if interior.sum() >= 10 else t1w[tissue]
        if values.size == 0:
            raise ValueError(f"no voxel labelled {label}: the segmentation found no such tissue")
        means[label] = float(values.mean())
    if not means[CSF] < means[GM] < means[WM]:
        raise ValueError(f"tissue means not ordered CSF < GM < WM (T1w contrast): {means}")
    return means


def _between(y: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip((y - low) / (high - low), 0.0, 1.0)


def pv_fractions(
    t1w: np.ndarray, labels: np.ndarray, means: dict[int, float], deep_gm: np.ndarray | None = None
) -> np.ndarray:
    """GM, WM, CSF fractions (last axis, summing to 1) of the labelled voxels; 0 where label is 0."""
    y = t1w.astype(np.float32)
    near = {k: ndimage.binary_dilation(labels == k, _SIX) for k in (GM, WM, CSF)}
    labelled = labels > 0
    border = labelled & (sum(near[k].astype(np.uint8) for k in near) > 1)
    out = np.zeros((*labels.shape, 3), np.float32)
    for k in (GM, WM, CSF):
        out[..., k - 1] = (labels == k) & ~border
    mu_c, mu_g, mu_w = means[CSF], means[GM], means[WM]
    gm_wm = border & near[GM] & near[WM] & (~near[CSF] | (y >= mu_g))
    gm_csf = border & near[GM] & near[CSF] & ~gm_wm
    wm_csf = border & ~near[GM]
    w = _between(y[gm_wm], mu_g, mu_w)
    out[gm_wm] = np.stack([1 - w, w, np.zeros_like(w)], axis=-1)
    g = _between(y[gm_csf], mu_c, mu_g)
    out[gm_csf] = np.stack([g, np.zeros_like(g), 1 - g], axis=-1)
    w = _between(y[wm_csf], mu_c, mu_w)
    out[wm_csf] = np.stack([np.zeros_like(w), w, 1 - w], axis=-1)
    if deep_gm is not None:
        deep = deep_gm & labelled
        out[deep, 0] += out[deep, 1]
        out[deep, 1] = 0
    return out


def hard_segmentation(fractions: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Labels 1 GM, 2 WM, 3 CSF: the largest fraction inside ``inside``, 0 outside."""
    labels = fractions.argmax(axis=-1).astype(np.uint8) + 1
    return np.where(inside, labels, 0).astype(np.uint8)
