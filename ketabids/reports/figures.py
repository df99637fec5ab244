"""Figures for the HTML reports: slice mosaics with contours, rendered as inline base64 PNGs.

Everything runs on matplotlib's Agg backend and nilearn's plotting (which handles any affine),
so a report needs neither a display nor the network.
"""

from __future__ import annotations

import base64
import io
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import nibabel as nib
import numpy as np
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from nilearn import image as nimg
from nilearn import plotting

ImageLike = nib.spatialimages.SpatialImage | str | os.PathLike
ORIENTATIONS: tuple[str, ...] = ("x", "y", "z")  # sagittal, coronal, axial rows of a mosaic


@dataclass(frozen=True)
class Contour:
    """A line drawn where ``image`` crosses ``level``, in ``color``, named ``label`` in the legend."""

    image: nib.spatialimages.SpatialImage
    color: str
    label: str
    level: float = 0.5


def load_image(img: ImageLike) -> nib.spatialimages.SpatialImage:
    """Return ``img`` loaded (paths) or as is (images); 4D images with one volume are squeezed."""
    loaded = nib.load(os.fspath(img)) if isinstance(img, str | os.PathLike) else img
    if len(loaded.shape) == 4 and loaded.shape[3] == 1:
        loaded = nimg.index_img(loaded, 0)
    return loaded


def binary_image(img: ImageLike, labels: Sequence[int] | None = None) -> nib.Nifti1Image:
    """A float 0/1 image of voxels whose label is in ``labels`` (or non-zero when ``labels`` is None)."""
    loaded = load_image(img)
    data = np.asanyarray(loaded.dataobj)
    inside = data > 0 if labels is None else np.isin(np.rint(data).astype(np.int64), list(labels))
    return nib.Nifti1Image(inside.astype(np.float32), loaded.affine)


def figure_to_data_uri(fig: Figure, *, dpi: int = 100) -> str:
    """Render ``fig`` as a PNG ``data:`` URI and close it."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi, facecolor=fig.get_facecolor())
    finally:
        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def png_file_to_data_uri(path: str | os.PathLike) -> str:
    """Embed an existing PNG file as a ``data:`` URI."""
    with open(path, "rb") as handle:
        return "data:image/png;base64," + base64.b64encode(handle.read()).decode("ascii")


def cut_coords(mask: ImageLike, n_slices: int = 7, coverage: float = 0.9) -> dict[str, list[float]]:
    """World coordinates of ``n_slices`` evenly spaced slices per axis through the mask.

    Slices span the central ``coverage`` fraction of the mask's voxels along each world axis, so
    every slice shows tissue whatever the orientation (oblique grids included).
    """
    loaded = load_image(mask)
    voxels = np.argwhere(np.asanyarray(loaded.dataobj) > 0)
    if voxels.size == 0:
        raise ValueError("cannot place slices: the mask is empty")
    voxels = voxels[:: max(1, len(voxels) // 200_000)].astype(np.float64)  # plenty for percentiles
    world = voxels @ loaded.affine[:3, :3].T + loaded.affine[:3, 3]
    tail = 100 * (1 - coverage) / 2
    start, stop = np.percentile(world, [tail, 100 - tail], axis=0)
    return {
        axis: np.linspace(start[i], stop[i], n_slices).round(1).tolist()
        for i, axis in enumerate(ORIENTATIONS)
    }


def crop_box(mask: ImageLike, margin_mm: float = 15.0) -> tuple[slice, slice, slice]:
    """Voxel slices of the mask's bounding box grown by ``margin_mm`` (to crop images on its grid)."""
    loaded = load_image(mask)
    voxels = np.argwhere(np.asanyarray(loaded.dataobj) > 0)
    if voxels.size == 0:
        return (slice(None),) * 3
    pad = np.ceil(margin_mm / np.asarray(loaded.header.get_zooms()[:3], dtype=float)).astype(int)
    lows = np.maximum(voxels.min(axis=0) - pad, 0)
    highs = np.minimum(voxels.max(axis=0) + pad + 1, loaded.shape[:3])
    return tuple(slice(int(lo), int(hi)) for lo, hi in zip(lows, highs, strict=True))


def robust_max(img: nib.spatialimages.SpatialImage, percentile: float = 99.5) -> float:
    """A display maximum: the ``percentile`` of the non-zero voxels (bright outliers saturate)."""
    data = np.asanyarray(img.dataobj)
    values = data[data > 0]
    return float(np.percentile(values, percentile)) if values.size else 1.0


def as_ras(img: ImageLike, interpolation: str = "linear") -> nib.Nifti1Image:
    """A float copy of ``img`` on a RAS-diagonal grid (oblique grids are resampled, others flipped).

    Preparing images once this way saves nilearn from doing it again for every row of a mosaic.
    """
    loaded = load_image(img)
    data = np.asanyarray(loaded.dataobj).astype(np.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Rr]esampling binary images.*")
        return nimg.reorder_img(nib.Nifti1Image(data, loaded.affine), resample=interpolation)


def contour_mosaic(
    background: ImageLike,
    contours: Sequence[Contour],
    coords: Mapping[str, Sequence[float]],
    *,
    width: float = 12.0,
    row_height: float = 1.9,
    dpi: int = 100,
) -> str:
    """Rows of slices (one row per key of ``coords``: ``x``, ``y``, ``z``) with contours, as a PNG URI."""
    rows = [axis for axis in ORIENTATIONS if axis in coords]
    legend_height = 0.35 if contours else 0.0
    fig = plt.figure(figsize=(width, row_height * len(rows) + legend_height), facecolor="black")
    try:
        bg = as_ras(background)
        vmax = robust_max(bg)
        overlays = [(as_ras(contour.image), contour) for contour in contours]
        overlays = [(img, c) for img, c in overlays if np.nanmax(img.get_fdata(), initial=0) > c.level]
        total = row_height * len(rows) + legend_height
        for row, axis in enumerate(rows):
            bottom = (legend_height + row_height * (len(rows) - row - 1)) / total
            ax = fig.add_axes((0, bottom, 1, row_height / total))
            display = plotting.plot_anat(
                bg,
                display_mode=axis,
                cut_coords=list(coords[axis]),
                figure=fig,
                axes=ax,
                annotate=False,
                draw_cross=False,
                black_bg=True,
                dim=0,
                vmin=0,
                vmax=vmax,
                colorbar=False,
            )
            display.annotate(left_right=False, positions=True, size=10)
            for img, contour in overlays:
                display.add_contours(img, levels=[contour.level], colors=[contour.color], linewidths=0.9)
        if contours:
            handles = [Line2D([], [], color=c.color, linewidth=2, label=c.label) for c in contours]
            fig.legend(
                handles=handles,
                loc="lower center",
                ncol=len(handles),
                frameon=False,
                labelcolor="white",
                fontsize=10,
            )
    except BaseException:
        plt.close(fig)
        raise
    return figure_to_data_uri(fig, dpi=dpi)
