"""Affine + SyN registration of a brain-extracted T1w to MNI152NLin2009aSym, and applying its transforms.

The transforms are written by ``antsRegistration`` itself as composite ANTs/ITK HDF5 files
(forward: T1w -> template, inverse: template -> T1w), then rewritten without HDF5 time stamps so
that reruns give the same bytes. The rigid and affine stages run with one ITK thread in their own
process (their sums depend on the thread count); SyN runs with ``--omp-nthreads`` and gives the
same field at any thread count. The deformable stage uses a cross-correlation metric on the
template brain resampled to ``template_spacing`` mm and cropped to the brain, so that the
deformation follows local volume change at a cost of about a minute.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np

from ketabids.data.templates import load_template
from ketabids.processing.anat import bounding_box, crop
from ketabids.processing.transforms import drop_time_stamps

CROP_MARGIN_MM = 8.0
MIN_TEMPLATE_SPACING_MM = 2.0
SYN_ITERATIONS = "100x50x20"
LINEAR_LEVELS_MM = (12.0, 6.0, 3.0)  # resolutions of the rigid and affine stages
OUTPUT_SPACING_MM = 1.5  # grid of the template-space outputs (full MNI field of view)


@dataclass(frozen=True)
class RegistrationResult:
    """Paths of the composite transforms and of the T1w warped into the template."""

    forward: Path
    inverse: Path
    warped: Path


def template_fixed_image(spacing: float, folder: str | os.PathLike) -> tuple[Path, Path]:
    """Write the skull-stripped template (and its mask) resampled to ``spacing`` mm, cropped to the brain."""
    folder = Path(folder)
    image_path = folder / f"template_brain_{spacing:g}mm.nii.gz"
    mask_path = folder / f"template_mask_{spacing:g}mm.nii.gz"
    if not (image_path.is_file() and mask_path.is_file()):
        image, mask = _template_fixed(spacing)
        image.to_filename(str(image_path))
        mask.to_filename(str(mask_path))
    return image_path, mask_path


@lru_cache(maxsize=4)
def _template_fixed(spacing: float) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    import ants

    template = load_template()
    brain = template.t1w.get_fdata(dtype=np.float32) * template.mask.get_fdata(dtype=np.float32)
    mask = template.mask.get_fdata(dtype=np.float32) > 0
    margin = int(CROP_MARGIN_MM)
    lo = np.maximum(np.argwhere(mask).min(axis=0) - margin, 0)
    hi = np.minimum(np.argwhere(mask).max(axis=0) + margin + 1, mask.shape)
    crop = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    affine = template.affine.copy()
    affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    out = []
    for data, interp in ((brain[crop], 0), (mask[crop].astype(np.float32), 1)):
        img = ants.from_nibabel_nifti(nib.Nifti1Image(np.ascontiguousarray(data), affine))
        if spacing != 1.0:
            img = ants.resample_image(img, [spacing] * 3, False, interp)
        out.append(ants.to_nibabel_nifti(img))
    return out[0], out[1]


def template_output_grid(folder: str | os.PathLike, spacing: float = OUTPUT_SPACING_MM) -> Path:
    """Write the template T1w resampled to ``spacing`` mm: the grid of the template-space outputs."""
    import ants

    path = Path(folder) / f"template_t1w_{spacing:g}mm.nii.gz"
    if not path.is_file():
        template = ants.from_nibabel_nifti(load_template().t1w)
        ants.image_write(ants.resample_image(template, [spacing] * 3, False, 0), str(path))
    return path


def ants_seed(seed: int) -> int:
    """ANTs seed for ``--random-seed`` ``seed``: ANTs takes 0 to mean "seed from the clock", so add 1."""
    return seed + 1


def _stage(metric: str, transform: str, iterations: str, shrink: str, smooth: str) -> list[str]:
    return ["-m", metric, "-t", transform, "-c", f"[{iterations},1e-6,10]", "-f", shrink, "-s", smooth]


def shrink_factors(levels_mm: tuple[float, ...], spacing: float) -> str:
    """ANTs shrink factors reaching about ``levels_mm`` resolution on a grid of ``spacing`` mm."""
    return "x".join(str(max(1, round(mm / spacing))) for mm in levels_mm)


def linear_args(
    fixed: Path, moving: Path, fixed_mask: Path, out_prefix: str, *, seed: int, spacing: float
) -> list[str]:
    """``antsRegistration`` arguments: centre of mass -> rigid -> affine (MI), writing
    ``<out_prefix>0GenericAffine.mat``. The stages run at about 12, 6 and 3 mm whatever ``spacing``."""
    mi = f"MI[{fixed},{moving},1,32,Regular,0.25]"
    shrink = shrink_factors(LINEAR_LEVELS_MM, spacing)
    args = ["-d", "3", "-r", f"[{fixed},{moving},1]", "--float", "1", "--random-seed", str(ants_seed(seed))]
    args += _stage(mi, "Rigid[0.1]", "500x250x100", shrink, "4x2x1mm")
    args += _stage(mi, "Affine[0.1]", "500x250x100", shrink, "4x2x1mm")
    return [*args, "-x", f"[{fixed_mask},NULL]", "-o", f"[{out_prefix}]", "-z", "1", "-v", "0"]


def syn_args(
    fixed: Path,
    moving: Path,
    fixed_mask: Path,
    initial: Path,
    out_prefix: str,
    *,
    syn_iterations: str = SYN_ITERATIONS,
) -> list[str]:
    """``antsRegistration`` arguments: SyN (CC, radius 2) from the ``initial`` affine, writing the
    composite forward and inverse transforms (affine + field). The levels halve the resolution
    from the template grid upwards."""
    levels = len(syn_iterations.split("x"))
    shrink = "x".join(str(2**i) for i in reversed(range(levels)))
    smooth = "x".join(str(i) for i in reversed(range(levels))) + "vox"
    args = ["-d", "3", "-r", str(initial), "--float", "1"]
    args += _stage(f"CC[{fixed},{moving},1,2]", "SyN[0.2,3,0]", syn_iterations, shrink, smooth)
    args += ["-x", f"[{fixed_mask},NULL]", "-o", f"[{out_prefix}]", "--write-composite-transform", "1"]
    return [*args, "-z", "1", "-v", "0"]


def run_ants_registration(args: list[str]) -> None:
    """Run ``antsRegistration`` in this process; raise ``RuntimeError`` on a non-zero status."""
    from ants.internal import get_lib_fn

    status = get_lib_fn("antsRegistration")([str(a) for a in args])
    if status != 0:
        raise RuntimeError(f"antsRegistration failed with status {status}")


def fit_affine(
    fixed: Path, moving: Path, fixed_mask: Path, out_prefix: str, *, seed: int, spacing: float
) -> Path:
    """Rigid + affine stages (:func:`linear_args`); the path of the affine transform."""
    run_ants_registration(linear_args(fixed, moving, fixed_mask, out_prefix, seed=seed, spacing=spacing))
    return Path(out_prefix + "0GenericAffine.mat")


def register(
    fixed: Path,
    moving: Path,
    fixed_mask: Path,
    out_prefix: str,
    *,
    seed: int,
    spacing: float,
    syn_iterations: str = SYN_ITERATIONS,
) -> tuple[Path, Path]:
    """Affine (one thread, :mod:`ketabids.processing.one_thread`) then SyN (any thread count);
    the composite forward and inverse transforms, rewritten without HDF5 time stamps."""
    from ketabids.processing.one_thread import call_in_one_thread

    affine = call_in_one_thread(
        fit_affine, fixed, moving, fixed_mask, out_prefix + "affine_", seed=seed, spacing=spacing
    )
    run_ants_registration(
        syn_args(fixed, moving, fixed_mask, affine, out_prefix, syn_iterations=syn_iterations)
    )
    forward, inverse = Path(out_prefix + "Composite.h5"), Path(out_prefix + "InverseComposite.h5")
    for transform in (forward, inverse):
        drop_time_stamps(transform)
    return forward, inverse


def register_to_template(
    moving_file: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    template_spacing: float | None = None,
    syn_iterations: str = SYN_ITERATIONS,
) -> RegistrationResult:
    """Register a brain-extracted T1w to the template; return composite forward/inverse transforms.

    ``template_spacing`` defaults to the input's finest voxel size, but at least 2 mm.
    """
    import ants

    out_dir = Path(out_dir)
    brain = nib.load(str(moving_file))
    cropped = out_dir / "moving_cropped.nii.gz"  # same world space, far fewer voxels to smooth
    crop(brain, bounding_box(np.asanyarray(brain.dataobj) > 0, margin=4)).to_filename(str(cropped))
    if template_spacing is None:
        zooms = brain.header.get_zooms()[:3]
        template_spacing = max(MIN_TEMPLATE_SPACING_MM, round(float(min(zooms)), 1))
    fixed, fixed_mask = template_fixed_image(template_spacing, out_dir)
    forward, inverse = register(
        fixed, cropped, fixed_mask, str(out_dir / "reg_"), seed=seed, spacing=template_spacing,
        syn_iterations=syn_iterations,
    )  # fmt: skip
    template = ants.image_read(str(template_output_grid(out_dir)))
    moving = ants.image_read(str(moving_file))
    warped = ants.apply_transforms(template, moving, [str(forward)], interpolator="linear")
    warped_path = out_dir / "t1w_in_template.nii.gz"
    ants.image_write(warped, str(warped_path))
    return RegistrationResult(forward=forward, inverse=inverse, warped=warped_path)


def apply_transform(
    moving_file: str | os.PathLike,
    reference_file: str | os.PathLike,
    transform: str | os.PathLike,
    out_file: str | os.PathLike,
    interpolator: str = "linear",
) -> Path:
    """Resample ``moving_file`` onto ``reference_file``'s grid through one (composite) transform."""
    import ants

    moving = ants.image_read(str(moving_file))
    reference = ants.image_read(str(reference_file))
    warped = ants.apply_transforms(reference, moving, [str(transform)], interpolator=interpolator)
    ants.image_write(warped, str(out_file))
    return Path(out_file)


def jacobian_determinant(
    forward: str | os.PathLike, reference_file: str | os.PathLike, out_file: str | os.PathLike
) -> Path:
    """Jacobian determinant, on ``reference_file``'s (template) grid, of the template -> T1w mapping.

    Values are native volume per template volume (affine and nonlinear parts), so a template-space
    map multiplied by it and summed over template voxels gives native volumes.
    """
    import ants

    reference = ants.image_read(str(reference_file))
    prefix = str(Path(out_file).with_name("forward_field_"))
    field = ants.apply_transforms(reference, reference, [str(forward)], compose=prefix)
    jacobian = ants.create_jacobian_determinant_image(reference, field, do_log=False)
    Path(field).unlink()
    ants.image_write(jacobian, str(out_file))
    return Path(out_file)


def warp_template_priors(
    inverse: str | os.PathLike, reference_file: str | os.PathLike, out_dir: str | os.PathLike
) -> tuple[Path, Path, Path]:
    """Template GM, WM, CSF probability maps resampled onto the T1w grid (linear)."""
    import ants

    template = load_template()
    reference = ants.image_read(str(reference_file))
    paths = []
    for tissue, img in (("GM", template.gm), ("WM", template.wm), ("CSF", template.csf)):
        prior = ants.from_nibabel_nifti(img)
        warped = ants.apply_transforms(reference, prior, [str(inverse)], interpolator="linear")
        path = Path(out_dir) / f"prior_{tissue}.nii.gz"
        ants.image_write(warped, str(path))
        paths.append(path)
    return paths[0], paths[1], paths[2]


def warp_atlas(
    atlas_image: nib.Nifti1Image,
    inverse: str | os.PathLike,
    reference_file: str | os.PathLike,
    out_file: str | os.PathLike,
) -> Path:
    """Atlas labels resampled onto the T1w grid with ANTs' label-wise (GenericLabel) interpolation."""
    import ants

    reference = ants.image_read(str(reference_file))
    atlas = ants.from_nibabel_nifti(
        nib.Nifti1Image(np.asarray(atlas_image.dataobj, dtype=np.float32), atlas_image.affine)
    )
    warped = ants.apply_transforms(reference, atlas, [str(inverse)], interpolator="genericLabel")
    out = nib.Nifti1Image(np.rint(warped.numpy()).astype(np.int16), nib.load(str(reference_file)).affine)
    out.set_data_dtype(np.int16)
    out.to_filename(str(out_file))
    return Path(out_file)
