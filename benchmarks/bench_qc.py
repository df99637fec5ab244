"""Registration QC: the correlation of good and deliberately misregistered T1w images with the template.

Reads every ``*_space-MNI152NLin2009aSym_desc-preproc_T1w.nii.gz`` below the given participant
output folders (e.g. those of ``benchmarks/bench_participant.py``), and prints for each the
``registration_correlation`` of the image as registered, shifted by 5 and 10 mm, rotated by 10 and
20 degrees and scrambled, next to the threshold in ``ketabids.morphometry.PLAUSIBLE``.

    python benchmarks/bench_qc.py /tmp/bench/out [more output folders]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to
from scipy import ndimage

from ketabids.data.templates import TEMPLATE_NAME, load_template
from ketabids.morphometry import PLAUSIBLE, similarity


def perturbations(data: np.ndarray, spacing: float) -> dict[str, np.ndarray]:
    """The image as registered and moved off by known amounts."""
    rng = np.random.default_rng(0)
    return {
        "registered": data,
        "shift_5mm": ndimage.shift(data, (0, 5 / spacing, 0), order=1),
        "shift_10mm": ndimage.shift(data, (0, 10 / spacing, 0), order=1),
        "rotate_10deg": ndimage.rotate(data, 10, axes=(1, 2), reshape=False, order=1),
        "rotate_20deg": ndimage.rotate(data, 20, axes=(1, 2), reshape=False, order=1),
        "scrambled": rng.permutation(data.ravel()).reshape(data.shape),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args()
    template = load_template()
    low = PLAUSIBLE["registration_correlation"][0]
    print(f"image\tcase\tregistration_correlation\tflagged (< {low:g})")
    for folder in args.folders:
        for path in sorted(folder.rglob(f"*_space-{TEMPLATE_NAME}_desc-preproc_T1w.nii.gz")):
            warped = nib.load(str(path))
            reference = resample_from_to(template.t1w, warped, order=1).get_fdata()
            mask = resample_from_to(template.mask, warped, order=0).get_fdata() > 0
            spacing = float(warped.header.get_zooms()[1])
            for case, data in perturbations(warped.get_fdata(), spacing).items():
                r = similarity(data, reference, mask)
                print(f"{path.name}\t{case}\t{r:.3f}\t{r < low}", flush=True)


if __name__ == "__main__":
    main()
