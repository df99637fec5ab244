"""Glass-brain map of per-patient region contributions: regions land where the anatomy puts them."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
from matplotlib.image import imread

from ketabids.reports.brainmap import VIEWS, projections, region_map_png


def _decode(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    return imread(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))[..., :3]


def _centre(mask: np.ndarray) -> np.ndarray:
    """Centre of a mask as fractions of the image height and width."""
    return np.argwhere(mask).mean(axis=0) / mask.shape


def test_regions_are_painted_where_the_anatomy_puts_them():
    """Left frontal pole (+, red) and right cerebellum (-, blue) on the sagittal, coronal and axial
    views: front/back, left/right and up/down as the captions say."""
    values = pd.Series({"Left_FRP_frontal_pole": 0.8, "Right_Cerebellum_Exterior": -0.4, "not a region": 9.0})
    image = _decode(region_map_png(values, "neuromorphometrics"))
    maps = projections("neuromorphometrics")
    widths = [s.shape[1] for s in maps.silhouettes]
    starts = np.cumsum([0, *[w + 8 for w in widths[:-1]]])
    red = image[..., 0] > image[..., 2] + 0.2  # grey levels have equal channels
    blue = image[..., 2] > image[..., 0] + 0.2
    views = {}
    for name, start, width in zip(VIEWS, starts, widths, strict=True):
        views[name] = {
            colour: _centre(mask[:, start : start + width]) for colour, mask in (("red", red), ("blue", blue))
        }
    # (row, column) fractions: rows grow downwards
    assert views["sagittal"]["red"][1] > 0.8 > 0.3 > views["sagittal"]["blue"][1]  # frontal anterior (right)
    assert views["sagittal"]["blue"][0] > 0.6 > views["sagittal"]["red"][0]  # cerebellum below
    assert views["coronal"]["red"][1] < 0.5 < views["coronal"]["blue"][1]  # left on the left
    assert views["axial"]["red"][0] < 0.2 and views["axial"]["blue"][0] > 0.6  # anterior up
    # colour depth follows |value| relative to the largest: a stronger cerebellum gets darker
    stronger = _decode(region_map_png(values.replace(-0.4, -1.6), "neuromorphometrics"))
    assert stronger[blue].mean() < image[blue].mean() - 0.1


def test_no_map_without_atlas_regions():
    assert region_map_png(pd.Series({"voxel_1": 1.0}), "neuromorphometrics") is None
    assert region_map_png(pd.Series({"Left_FRP_frontal_pole": 0.0}), "neuromorphometrics") is None
