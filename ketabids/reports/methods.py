"""Methods text to cite, its references, and the versions of the software that produced a result."""

from __future__ import annotations

import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata

from ketabids import __version__
from ketabids.data import ATLASES, TEMPLATE_NAME
from ketabids.data.atlases import SOURCES
from ketabids.processing.brain import METHOD

# Distributions whose versions a report lists, in this order (ketabids and Python are added first).
SOFTWARE_PACKAGES: tuple[str, ...] = (
    "antspyx",
    "deepbet",
    "torch",
    "nipype",
    "nibabel",
    "nilearn",
    "pybids",
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "skops",
    "matplotlib",
)


@dataclass(frozen=True)
class Reference:
    """One bibliographic reference; ``doi`` without the ``https://doi.org/`` prefix."""

    key: str
    text: str
    doi: str

    @property
    def url(self) -> str:
        return f"https://doi.org/{self.doi}"


REFERENCES: dict[str, Reference] = {
    ref.key: ref
    for ref in (
        Reference(
            "bryant2026",
            "Bryant et al. Structural imaging predictors of ketamine response in treatment-resistant "
            "depression: a machine learning approach. Transl Psychiatry. 2026.",
            "10.1038/s41398-026-04085-4",
        ),
        Reference(
            "nipype",
            "Gorgolewski K, Burns CD, Madison C, et al. Nipype: a flexible, lightweight and extensible "
            "neuroimaging data processing framework in Python. Front Neuroinform. 2011;5:13.",
            "10.3389/fninf.2011.00013",
        ),
        Reference(
            "antsx",
            "Tustison NJ, Cook PA, Holbrook AJ, et al. The ANTsX ecosystem for quantitative biological "
            "and medical imaging. Sci Rep. 2021;11:9068.",
            "10.1038/s41598-021-87564-6",
        ),
        Reference(
            "n4",
            "Tustison NJ, Avants BB, Cook PA, et al. N4ITK: improved N3 bias correction. "
            "IEEE Trans Med Imaging. 2010;29(6):1310-1320.",
            "10.1109/TMI.2010.2046908",
        ),
        Reference(
            "deepbet",
            "Fisch L, Zumdick S, Barkhau C, et al. deepbet: fast brain extraction of T1-weighted MRI "
            "using convolutional neural networks. Comput Biol Med. 2024;179:108845.",
            "10.1016/j.compbiomed.2024.108845",
        ),
        Reference(
            "atropos",
            "Avants BB, Tustison NJ, Wu J, Cook PA, Gee JC. An open source multivariate framework for "
            "n-tissue segmentation with evaluation on public data. Neuroinformatics. 2011;9(4):381-400.",
            "10.1007/s12021-011-9109-y",
        ),
        Reference(
            "fast",
            "Zhang Y, Brady M, Smith S. Segmentation of brain MR images through a hidden Markov random "
            "field model and the expectation-maximization algorithm. IEEE Trans Med Imaging. "
            "2001;20(1):45-57.",
            "10.1109/42.906424",
        ),
        Reference(
            "cat12",
            "Gaser C, Dahnke R, Thompson PM, Kurth F, Luders E. CAT: a computational anatomy toolbox for "
            "the analysis of structural MRI data. GigaScience. 2024;13:giae049.",
            "10.1093/gigascience/giae049",
        ),
        Reference(
            "syn",
            "Avants BB, Epstein CL, Grossman M, Gee JC. Symmetric diffeomorphic image registration with "
            "cross-correlation: evaluating automated labeling of elderly and neurodegenerative brain. "
            "Med Image Anal. 2008;12(1):26-41.",
            "10.1016/j.media.2007.06.004",
        ),
        Reference(
            "mni2009",
            "Fonov V, Evans AC, Botteron K, et al. Unbiased average age-appropriate atlases for pediatric "
            "studies. NeuroImage. 2011;54(1):313-327.",
            "10.1016/j.neuroimage.2010.07.033",
        ),
        Reference(
            "nilearn",
            "Abraham A, Pedregosa F, Eickenberg M, et al. Machine learning for neuroimaging with "
            "scikit-learn. Front Neuroinform. 2014;8:14.",
            "10.3389/fninf.2014.00014",
        ),
        Reference(
            "neuromorphometrics",
            "Neuromorphometrics, Inc. maximum-probability labels of the MICCAI 2012 Grand Challenge and "
            "Workshop on Multi-Atlas Labeling, as distributed with SPM12 (labels_Neuromorphometrics.nii); "
            "MRI scans from OASIS: Marcus DS, Wang TH, Parker J, Csernansky JG, Morris JC, Buckner RL. Open "
            "Access Series of Imaging Studies (OASIS): cross-sectional MRI data in young, middle aged, "
            "nondemented, and demented older adults. J Cogn Neurosci. 2007;19(9):1498-1507.",
            "10.1162/jocn.2007.19.9.1498",
        ),
        Reference(
            "aal",
            "Rolls ET, Joliot M, Tzourio-Mazoyer N. Implementation of a new parcellation of the "
            "orbitofrontal cortex in the automated anatomical labeling atlas (AAL2). NeuroImage. "
            "2015;122:1-5.",
            "10.1016/j.neuroimage.2015.07.075",
        ),
        Reference(
            "aal1",
            "Tzourio-Mazoyer N, Landeau B, Papathanassiou D, et al. Automated anatomical labeling of "
            "activations in SPM using a macroscopic anatomical parcellation of the MNI MRI single-subject "
            "brain. NeuroImage. 2002;15(1):273-289.",
            "10.1006/nimg.2001.0978",
        ),
        Reference(
            "harvard_oxford",
            "Desikan RS, Ségonne F, Fischl B, et al. An automated labeling system for subdividing the "
            "human cerebral cortex on MRI scans into gyral based regions of interest. NeuroImage. "
            "2006;31(3):968-980.",
            "10.1016/j.neuroimage.2006.01.021",
        ),
    )
}
ATLAS_REFERENCES: dict[str, tuple[str, ...]] = {
    "neuromorphometrics": ("neuromorphometrics",),
    "aal": ("aal1", "aal"),
    "harvard_oxford": ("harvard_oxford",),
}


@dataclass(frozen=True)
class Methods:
    """A methods paragraph whose ``[n]`` markers number into ``references``."""

    text: str
    references: tuple[Reference, ...]


def software_versions(packages: Sequence[str] = SOFTWARE_PACKAGES) -> dict[str, str]:
    """Versions of ketabids, Python and the installed ``packages`` ("not installed" when absent)."""
    versions = {"ketabids": __version__, "python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _cite(keys: Sequence[str], cited: list[str]) -> str:
    """Return ``[n, m]`` for ``keys``, numbering references in order of first citation."""
    for key in keys:
        if key not in cited:
            cited.append(key)
    return "[" + ", ".join(str(cited.index(key) + 1) for key in keys) + "]"


BRAIN_EXTRACTION = (METHOD,)


def participant_methods(
    atlas: str,
    software: Mapping[str, str] | None = None,
    *,
    brain_extraction: Sequence[str] = BRAIN_EXTRACTION,
) -> Methods:
    """The participant-level methods paragraph for ``atlas``, with versions from ``software``, naming
    the brain-extraction method(s) that ran (``BRAIN_EXTRACTION``)."""
    unknown = set(brain_extraction) - set(BRAIN_EXTRACTION)
    if unknown or not brain_extraction:
        raise ValueError(f"unknown brain-extraction method(s): {sorted(unknown) or 'none given'}")
    versions = dict(software) if software is not None else software_versions()
    cited: list[str] = []

    def version(name: str) -> str:
        return versions.get(name, "unknown version")

    def cite(*keys: str) -> str:
        return _cite([key for key in keys if key in REFERENCES], cited)

    sentences = [
        f"Structural images were processed with ketabids {version('ketabids')} {cite('bryant2026')}, "
        f"a workflow built with Nipype {version('nipype')} {cite('nipype')} that runs the ANTs "
        f"algorithms through ANTsPy (antspyx {version('antspyx')}) {cite('antsx')}.",
        "One T1-weighted (T1w) image per participant and session was reoriented to RAS and corrected "
        f"for intensity non-uniformity with N4 {cite('n4')}.",
        *[_brain_extraction_sentence(method, version, cite) for method in brain_extraction],
        "Grey matter (GM), white matter (WM) and cerebrospinal fluid (CSF) were measured as "
        f"partial-volume fractions. Atropos {cite('atropos')} labelled each brain voxel with one of "
        "three Gaussian intensity classes under a light Markov random field; the template tissue "
        "probability maps, warped to the T1w, only initialised it (prior weight 0), so that the labels "
        "follow the image. As in FSL FAST and CAT12 "
        f"{cite('fast', 'cat12')}, voxels inside a class were taken as pure and voxels at a border "
        "between two classes (CSF/GM, GM/WM, or WM/CSF at the ventricle walls) received the fractions "
        "given by their intensity between the two pure-class mean intensities (linear mixing), the "
        "means being estimated from the interior voxels of each class. In the deep grey nuclei "
        "(thalamus, caudate, putamen, pallidum and accumbens of the Harvard-Oxford atlas "
        f"{cite('harvard_oxford')}, brought to native space with the inverse transform described "
        "below), whose T1w intensity lies between those of cortical GM and WM, all non-CSF tissue was "
        "counted as GM. The hard segmentation is the tissue with the largest fraction.",
        f"The T1w image was registered nonlinearly to the {TEMPLATE_NAME} template {cite('mni2009')} "
        f"(as distributed with nilearn {version('nilearn')} {cite('nilearn')}) with symmetric "
        f"diffeomorphic normalisation (SyN) {cite('syn')}.",
        f"The {ATLASES.get(atlas, atlas).split(' (')[0]} atlas {cite(*ATLAS_REFERENCES.get(atlas, ()))}"
        + (
            f", shipped with ketabids after being brought once from its own space, "
            f"{SOURCES[atlas].source_space}, into {TEMPLATE_NAME} by a nonlinear template-to-template "
            f"registration (SyN) {cite('syn')} whose provenance ships with it,"
            if atlas in SOURCES
            else ""
        )
        + " was brought into native space with the inverse transform (label-wise interpolation), and "
        "the GM volume of each region was computed as the sum of the GM fraction times the voxel volume.",
        "The intracranial cavity was defined in template space as the template brain mask grown by "
        "2 mm of external CSF and brought to native space with the inverse transform; inside it, but "
        "outside the brain mask, tissue was counted as CSF, and all fractions were weighted by it. "
        "Total intracranial volume (TIV), the sum of the GM, WM and CSF volumes as in CAT12, is thus "
        "the volume of the intracranial cavity including the CSF outside the brain, and does not "
        "depend on the outer edge of the brain mask. A Jacobian-modulated GM map in template space "
        "was saved for voxel-wise analyses.",
        "Quality-control metrics (contrast-to-noise ratio, coefficient of joint variation, "
        "signal-to-noise ratio, GM and WM fractions of TIV, brain volume and the Pearson correlation of "
        "the registered, bias-corrected brain with the template inside the template brain mask) were "
        "computed for every image; an image with any metric outside its documented plausible range "
        "was flagged, with the reason, and left out of the group analysis.",
        f"The regional GM volumes are the inputs of the ketamine-response model of Bryant et al. "
        f"{cite('bryant2026')}.",
    ]
    return Methods(text=" ".join(sentences), references=tuple(REFERENCES[key] for key in cited))


def _brain_extraction_sentence(method: str, version: Callable[[str], str], cite: Callable[..., str]) -> str:
    return (
        f"The brain was extracted with {method} {version(method)} {cite(method)}, a "
        "convolutional neural network run on the CPU."
    )
