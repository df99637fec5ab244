"""Figures for the HTML reports, rendered as inline base64 PNG ``data:`` URIs.

Participant report: ``contour_mosaic`` (rows of sagittal, coronal and axial slices with contours),
``cut_coords``, ``crop_box``, ``as_ras``, ``binary_image``. Group report: ``region_value_image`` +
``stat_mosaic`` (e.g. SVM weights painted on atlas regions), ``roc_figure``,
``null_distribution_figure``, ``weight_bars``; any matplotlib figure goes through
``figure_to_data_uri``. Everything runs on matplotlib's Agg backend and nilearn's plotting (which
handles any affine), so a report needs neither a display nor the network.
"""

from __future__ import annotations

import base64
import io
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import nibabel as nib
import numpy as np
from matplotlib import pyplot as plt
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
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


@contextmanager
def closed_on_error(fig: Figure) -> Iterator[Figure]:
    """Close ``fig`` if drawing it fails (pyplot keeps every open figure alive otherwise)."""
    try:
        yield fig
    except BaseException:
        plt.close(fig)
        raise


def reliability_axes(ax) -> None:
    """Axes of a reliability diagram: predicted probability against observed response rate."""
    ax.set(
        xlabel="predicted probability of response", ylabel="observed response rate", xlim=(0, 1), ylim=(0, 1)
    )
    ax.legend(fontsize=7, frameon=False, loc="upper left")


def load_image(img: ImageLike) -> nib.spatialimages.SpatialImage:
    """Return ``img`` loaded (paths) or as is (images); 4D images with one volume are squeezed."""
    loaded = nib.load(os.fspath(img)) if isinstance(img, str | os.PathLike) else img
    if len(loaded.shape) == 4 and loaded.shape[3] == 1:
        loaded = nimg.index_img(loaded, 0)
    return loaded


def binary_image(img: ImageLike, labels: Sequence[int] | None = None) -> nib.Nifti1Image:
    """A float 0/1 image of voxels whose label is in ``labels`` (or non-zero when ``labels`` is None)."""
    loaded = load_image(img)
    data = np.nan_to_num(np.asanyarray(loaded.dataobj, dtype=np.float64))
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
    with closed_on_error(fig):
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
    return figure_to_data_uri(fig, dpi=dpi)


def region_value_image(atlas_image: ImageLike, values: Mapping[int, float]) -> nib.Nifti1Image:
    """Paint each atlas region (label index -> value) with its value; other voxels are 0."""
    loaded = load_image(atlas_image)
    labels = np.rint(np.asanyarray(loaded.dataobj)).astype(np.int64)
    lookup = np.zeros(max(int(labels.max()), *values.keys(), 0) + 1, dtype=np.float32)
    for index, value in values.items():
        lookup[int(index)] = value
    return nib.Nifti1Image(lookup[np.clip(labels, 0, None)], loaded.affine)


def stat_mosaic(
    stat_img: ImageLike,
    *,
    background: ImageLike | None = None,
    coords: Mapping[str, Sequence[float]] | None = None,
    cmap: str = "RdBu_r",
    colorbar_label: str = "",
    width: float = 12.0,
    row_height: float = 1.9,
    dpi: int = 100,
) -> str:
    """Rows of slices of a signed map (e.g. regional SVM weights) on the template, as a PNG URI.

    Colours are symmetric around 0 (red positive, blue negative with the default ``cmap``); the
    background defaults to the MNI152NLin2009aSym T1w and the slices to its brain mask.
    """
    from ketabids.data import load_template

    template = load_template()
    bg = as_ras(background if background is not None else template.t1w)
    stat = as_ras(stat_img)
    coords = coords if coords is not None else cut_coords(template.mask)
    rows = [axis for axis in ORIENTATIONS if axis in coords]
    data = stat.get_fdata()
    vmax = float(np.nanmax(np.abs(data), initial=0)) or 1.0
    colorbar_height = 1.0  # inches below the slices for the colour bar, its ticks and label
    total = row_height * len(rows) + colorbar_height
    fig = plt.figure(figsize=(width, total), facecolor="black")
    with closed_on_error(fig):
        for row, axis in enumerate(rows):
            bottom = (colorbar_height + row_height * (len(rows) - row - 1)) / total
            ax = fig.add_axes((0, bottom, 1, row_height / total))
            display = plotting.plot_stat_map(
                stat,
                bg_img=bg,
                display_mode=axis,
                cut_coords=list(coords[axis]),
                figure=fig,
                axes=ax,
                cmap=cmap,
                vmin=-vmax,
                vmax=vmax,
                threshold=vmax * 1e-3,
                symmetric_cbar=True,
                colorbar=False,
                annotate=False,
                draw_cross=False,
                black_bg=True,
                dim=0,
            )
            display.annotate(left_right=False, positions=True, size=10)
        cax = fig.add_axes((0.3, 0.62 / total, 0.4, 0.14 / total))
        mappable = ScalarMappable(norm=Normalize(-vmax, vmax), cmap=cmap)
        bar = fig.colorbar(mappable, cax=cax, orientation="horizontal")
        bar.set_label(colorbar_label, color="white")
        bar.ax.tick_params(colors="white", labelsize=9)
    return figure_to_data_uri(fig, dpi=dpi)


def roc_figure(curves: Mapping[str, tuple[Sequence[int], Sequence[float]]], *, size: float = 4.5) -> str:
    """ROC curves, one per evaluation set name -> (y_true 0/1, probability), with AUCs in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(size, size))
    with closed_on_error(fig):
        ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="chance")
        for name, (y_true, probability) in curves.items():
            y, p = np.asarray(y_true), np.asarray(probability, dtype=float)
            if len(np.unique(y)) < 2:
                continue  # a ROC curve needs both classes
            fpr, tpr, _ = roc_curve(y, p)
            ax.plot(fpr, tpr, linewidth=2, label=f"{name} (AUC {roc_auc_score(y, p):.2f}, n={len(y)})")
        ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
        ax.legend(loc="lower right", fontsize=8, frameon=False)
        fig.tight_layout()
    return figure_to_data_uri(fig)


def null_distribution_figure(
    null: Sequence[float], observed: float, *, label: str = "balanced accuracy", p_value: float | None = None
) -> str:
    """Histogram of a permutation null distribution with the observed value as a vertical line."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    with closed_on_error(fig):
        ax.hist(np.asarray(null, dtype=float), bins=30, color="#90a4ae", edgecolor="white")
        title = f"observed {observed:.3f}" + (f", p = {p_value:.3g}" if p_value is not None else "")
        ax.axvline(observed, color="#d32f2f", linewidth=2, label=title)
        ax.set(xlabel=f"{label} under permuted labels", ylabel="permutations")
        ax.legend(frameon=False, fontsize=9)
        fig.tight_layout()
    return figure_to_data_uri(fig)


def weight_bars(weights: Mapping[str, float], *, top: int = 20, xlabel: str = "weight") -> str:
    """Horizontal bars of the ``top`` largest absolute weights (red positive, blue negative)."""
    ranked = sorted(weights.items(), key=lambda item: abs(item[1]), reverse=True)[:top][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(ranked) + 1.0))
    with closed_on_error(fig):
        names, values = [name for name, _ in ranked], [float(value) for _, value in ranked]
        ax.barh(names, values, color=["#d32f2f" if v > 0 else "#1976d2" for v in values])
        ax.axvline(0, color="0.3", linewidth=0.8)
        ax.set_xlabel(xlabel)
        ax.tick_params(axis="y", labelsize=8)
        fig.tight_layout()
    return figure_to_data_uri(fig)
