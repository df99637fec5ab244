"""A glass-brain map of a few regions' values: three projections of the template-space atlas, one PNG.

Each view shows, along every ray through the brain, the region with the largest absolute value
that the ray crosses (a maximum-intensity projection of the painted atlas), over the brain's
silhouette and outline. The atlas is projected once per atlas and view (which regions each ray
crosses), so painting one patient's regions is a few array lookups: hundreds of per-patient pages
cost milliseconds each, where a nilearn glass brain costs about a second per figure.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from functools import lru_cache

import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.image import imsave
from scipy import ndimage

from ketabids.data.atlases import load_atlas

VIEWS = ("sagittal", "coronal", "axial")  # projected along x, y and z of the RAS grid
CAPTION = "sagittal (anterior to the right), coronal (right hemisphere on the right), axial (anterior up)"
_GAP = 8  # pixels between views
_MARGIN = 3  # pixels around each view's brain
_BACKGROUND, _BRAIN, _OUTLINE = 255, 235, 140  # grey levels


@dataclass(frozen=True)
class Projections:
    """Per view, the regions each ray crosses (regions x rows x columns, display orientation) and
    the brain's silhouette and outline; ``rows`` maps a region name to its index."""

    rows: dict[str, int]
    footprints: tuple[np.ndarray, ...]
    silhouettes: tuple[np.ndarray, ...]
    outlines: tuple[np.ndarray, ...]


def _display(planes: np.ndarray) -> np.ndarray:
    """Projected planes (..., horizontal, vertical) as images whose first row is the top."""
    return np.flip(np.swapaxes(planes, -1, -2), axis=-2)


@lru_cache(maxsize=2)
def projections(atlas_name: str) -> Projections:
    """Project the atlas' GM regions along each axis of its (RAS) 1 mm template grid."""
    atlas = load_atlas(atlas_name)
    labels = np.asarray(nib.as_closest_canonical(atlas.image).dataobj)
    regions = atlas.gm_labels
    lookup = np.full(int(labels.max()) + 1, -1)
    lookup[regions["index"].to_numpy(int)] = np.arange(len(regions))
    row = lookup[labels.clip(0)]
    voxels = np.nonzero(row >= 0)
    which = row[voxels]
    footprints, silhouettes, outlines = [], [], []
    for axis in range(3):
        kept = [a for a in range(3) if a != axis]
        footprint = np.zeros((len(regions), *(labels.shape[a] for a in kept)), dtype=bool)
        footprint[(which, *(voxels[a] for a in kept))] = True
        silhouette = _display((labels > 0).any(axis=axis))
        (box,) = ndimage.find_objects(silhouette.astype(np.int8))
        crop = tuple(slice(max(s.start - _MARGIN, 0), s.stop + _MARGIN) for s in box)
        silhouette = silhouette[crop]
        footprints.append(_display(footprint)[(slice(None), *crop)])
        silhouettes.append(silhouette)
        outlines.append(silhouette & ~ndimage.binary_erosion(silhouette, iterations=2, border_value=0))
    return Projections(
        rows={name: i for i, name in enumerate(regions["name"])},
        footprints=tuple(footprints),
        silhouettes=tuple(silhouettes),
        outlines=tuple(outlines),
    )


def _view(maps: Projections, view: int, values: pd.Series, limit: float) -> np.ndarray:
    """RGB image (uint8) of one view: regions coloured by value (red positive, blue negative)."""
    grey = np.where(maps.silhouettes[view], _BRAIN, _BACKGROUND).astype(np.uint8)
    grey[maps.outlines[view]] = _OUTLINE
    image = np.repeat(grey[..., None], 3, axis=-1)
    colours = colormaps["RdBu_r"]
    for name, value in values.reindex(values.abs().sort_values().index).items():  # largest on top
        shade = 0.5 + np.sign(value) * (0.15 + 0.35 * abs(value) / limit)
        image[maps.footprints[view][maps.rows[name]]] = np.round(255 * np.array(colours(shade)[:3]))
    return image


def region_map_png(values: pd.Series, atlas_name: str) -> str | None:
    """``data:image/png;base64,...`` of the regions in ``values`` (indexed by atlas region name)
    painted on the three views; None when no value names a GM region of the atlas."""
    maps = projections(atlas_name)
    values = values[values.index.isin(list(maps.rows)) & np.isfinite(values.to_numpy(float))]
    limit = float(values.abs().max()) if len(values) else 0.0
    if limit == 0:
        return None
    views = [_view(maps, v, values, limit) for v in range(len(VIEWS))]
    height = max(v.shape[0] for v in views)
    padded = []
    for view in views:
        top = (height - view.shape[0]) // 2
        canvas = np.full((height, view.shape[1] + _GAP, 3), _BACKGROUND, dtype=np.uint8)
        canvas[top : top + view.shape[0], : view.shape[1]] = view
        padded.append(canvas)
    buffer = io.BytesIO()
    imsave(buffer, np.concatenate(padded, axis=1)[:, :-_GAP], format="png", pil_kwargs={"compress_level": 1})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
