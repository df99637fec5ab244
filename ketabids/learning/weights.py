"""Feature weights of the linear models, their stability across CV folds, and weight maps."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd

from ketabids.data.atlases import load_atlas


def _unit(w: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(w)
    return w / norm if norm > 0 else w


def weight_table(
    names: list[str], final: np.ndarray | None, cv: list[np.ndarray], pattern: np.ndarray
) -> pd.DataFrame:
    """``feature``, ``weight`` (final model, unit norm; positive -> response) and stability columns.

    ``cv_mean``/``cv_sd`` summarise the unit-norm weights of the CV models, ``sign_consistency``
    is the fraction of CV models whose weight has the sign of their mean, and ``pattern`` is
    the covariance of each standardised feature with the final decision value (Haufe et al. 2014),
    which is what to read for a non-linear kernel.
    """
    table = pd.DataFrame({"feature": names})
    table["weight"] = _unit(final) if final is not None else np.nan
    if cv:
        stacked = np.vstack([_unit(w) for w in cv])
        mean = stacked.mean(axis=0)
        table["cv_mean"] = mean
        table["cv_sd"] = stacked.std(axis=0)
        table["sign_consistency"] = (np.sign(stacked) == np.sign(mean)).mean(axis=0)
    table["pattern"] = pattern
    order = table["weight"].abs() if final is not None else table["pattern"].abs()
    table["rank"] = order.rank(ascending=False, method="first").astype(int)
    return table.sort_values("rank").reset_index(drop=True)


def haufe_pattern(z_train: np.ndarray, decision: np.ndarray) -> np.ndarray:
    """Covariance between each standardised training feature and the decision value."""
    centred = decision - decision.mean()
    return (z_train - z_train.mean(axis=0)).T @ centred / max(len(decision) - 1, 1)


def region_map(values: pd.Series, atlas_name: str) -> nib.Nifti1Image:
    """An image on the atlas grid (template space) with each GM region painted with its value."""
    atlas = load_atlas(atlas_name)
    labels = np.asarray(atlas.image.dataobj)
    lookup = np.zeros(int(labels.max()) + 1, dtype=np.float32)
    for index, name in zip(atlas.gm_labels["index"], atlas.gm_labels["name"], strict=True):
        if name in values.index and np.isfinite(values[name]):
            lookup[int(index)] = values[name]
    return nib.Nifti1Image(lookup[labels.clip(0)], atlas.image.affine)
