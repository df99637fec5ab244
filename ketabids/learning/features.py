"""Feature and covariate matrices: regional GM (fraction of TIV) or downsampled modulated GM maps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from ketabids.data.atlases import load_atlas
from ketabids.data.templates import load_template
from ketabids.errors import BadDataError, UsageError
from ketabids.settings import ColumnNames

COVARIATES = ("tiv", "age", "sex", "site")
VOXEL_MM = 4  # voxel features: modulated GM averaged over 4 x 4 x 4 mm blocks of the 1 mm template
VOXEL_GM_THRESHOLD = 0.3  # block-mean template GM probability needed to enter the mask


def roi_matrix(regions: dict[str, pd.Series], tissue: dict[str, pd.Series], atlas: str) -> pd.DataFrame:
    """Regional GM volume divided by TIV (participants x atlas GM regions, in label-table order)."""
    names = list(load_atlas(atlas).gm_labels["name"])
    rows = {}
    for participant, volumes in regions.items():
        missing = [name for name in names if name not in volumes.index]
        if missing:
            raise BadDataError(
                f"{participant}: region table lacks {len(missing)} GM region(s) of atlas '{atlas}' "
                f"(first: {missing[0]}); was it made with another atlas?"
            )
        rows[participant] = volumes[names].to_numpy() / float(tissue[participant]["tiv_mm3"])
    return pd.DataFrame.from_dict(rows, orient="index", columns=names)


def covariate_matrix(
    participants: pd.DataFrame,
    tissue: dict[str, pd.Series],
    covariates: tuple[str, ...],
    columns: ColumnNames,
    site_levels: list[str] | None = None,
) -> pd.DataFrame:
    """Numeric covariates (``tiv`` in litres, ``age``, ``sex`` as male = 1, ``site`` one-hot).

    ``site_levels`` are the training sites (all but the first get a column); unseen sites are all zeros.
    """
    index = list(tissue)
    out = pd.DataFrame(index=index)
    for name in covariates:
        if name not in COVARIATES:
            raise UsageError(f"unknown covariate '{name}'; choose from {', '.join(COVARIATES)}")
        if name == "tiv":
            out["tiv"] = [float(tissue[p]["tiv_mm3"]) / 1e6 for p in index]
            continue
        column = getattr(columns, name)
        if column not in participants.columns:
            raise BadDataError(f"participants.tsv: covariate column '{column}' is missing")
        values = participants.loc[index, column]
        if values.isna().any():
            raise BadDataError(
                f"participants.tsv: {values[values.isna()].index[0]} has no {column} (a covariate)"
            )
        if name == "age":
            numeric = pd.to_numeric(values, errors="coerce")
            if numeric.isna().any():
                raise BadDataError(
                    f"participants.tsv: {numeric[numeric.isna()].index[0]} has a non-numeric {column}"
                )
            out["age"] = numeric.to_numpy(dtype=float)
        elif name == "sex":
            out["sex_male"] = values.str.strip().str.upper().str[0].eq("M").astype(float).to_numpy()
        else:
            levels = site_levels if site_levels is not None else sorted(values.unique())
            for level in levels[1:]:
                out[f"site_{level}"] = (values == level).astype(float).to_numpy()
    return out


@dataclass(frozen=True)
class VoxelGrid:
    """The coarse grid of the voxel features and its GM mask."""

    affine: np.ndarray
    mask: np.ndarray

    def to_image(self, values: np.ndarray) -> nib.Nifti1Image:
        """A NIfTI image with ``values`` placed at the mask voxels."""
        data = np.zeros(self.mask.shape, dtype=np.float32)
        data[self.mask] = values
        return nib.Nifti1Image(data, self.affine)


def _block_mean(data: np.ndarray, factor: int) -> np.ndarray:
    pad = [(0, (-s) % factor) for s in data.shape]
    data = np.pad(data, pad)
    shape = [s // factor for s in data.shape]
    return data.reshape(shape[0], factor, shape[1], factor, shape[2], factor).mean(axis=(1, 3, 5))


def voxel_grid(factor: int = VOXEL_MM) -> VoxelGrid:
    """Coarse grid (block means of the 1 mm template) and its GM mask."""
    template = load_template()
    gm = _block_mean(template.gm.get_fdata(dtype=np.float32), factor)
    affine = template.affine.copy()
    affine[:3, :3] = template.affine[:3, :3] * factor
    affine[:3, 3] = template.affine[:3, :3] @ np.full(3, (factor - 1) / 2) + template.affine[:3, 3]
    return VoxelGrid(affine=affine, mask=gm > VOXEL_GM_THRESHOLD)


def voxel_matrix(paths: dict[str, Path], grid: VoxelGrid, factor: int = VOXEL_MM) -> pd.DataFrame:
    """Modulated GM maps (template space) on the coarse grid inside the GM mask.

    Maps on the 1 mm template grid are averaged over blocks; maps on any other grid are
    resampled (linearly) onto the coarse grid.
    """
    from nilearn.image import resample_img

    template = load_template()
    rows = {}
    for participant, path in paths.items():
        try:
            img = nib.load(path)
            on_template = img.shape[:3] == template.gm.shape and np.allclose(
                img.affine, template.affine, atol=1e-3
            )
            if on_template:
                data = _block_mean(
                    np.asarray(img.get_fdata(dtype=np.float32)).reshape(template.gm.shape), factor
                )
            else:
                data = resample_img(
                    nib.Nifti1Image(
                        np.asarray(img.dataobj, dtype=np.float32).reshape(img.shape[:3]), img.affine
                    ),
                    target_affine=grid.affine,
                    target_shape=grid.mask.shape,
                    interpolation="linear",
                    force_resample=True,
                    copy_header=True,
                ).get_fdata(dtype=np.float32)
        except (OSError, ValueError, nib.filebasedimages.ImageFileError) as err:
            raise BadDataError(f"{participant}: cannot read {path}: {err}") from err
        rows[participant] = data[grid.mask]
    columns = [f"voxel_{i}" for i in range(int(grid.mask.sum()))]
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns)
