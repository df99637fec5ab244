"""How well each shipped atlas fits the template's anatomy, against naive resampling of its source.

``python benchmarks/bench_atlases.py`` prints, per atlas, the mean template GM and WM probability
under its GM labels and the fraction of its GM labels outside the template brain mask, for the
source labels resampled as if already in MNI152NLin2009aSym ("naive") and for the shipped,
registered labels.
"""

from __future__ import annotations

import numpy as np
from nilearn.image import resample_to_img

from ketabids.data.atlases import SOURCES, load_atlas, load_source_atlas
from ketabids.data.make_atlases import label_fit
from ketabids.data.templates import load_template


def main() -> None:
    print("atlas\tlabels\tgm_features\tmethod\tmean_gm_prior\tmean_wm_prior\tgm_labels_outside_mask")
    for name in SOURCES:
        atlas = load_atlas(name)
        naive = resample_to_img(
            load_source_atlas(name).atlas.image,
            load_template().t1w,
            interpolation="nearest",
            force_resample=True,
            copy_header=True,
        )
        gm_index = atlas.gm_labels["index"].to_numpy()
        for method, img in (("naive", naive), ("registered", atlas.image)):
            gm, wm, out = label_fit(np.asarray(img.dataobj), gm_index)
            print(f"{name}\t{len(atlas.labels)}\t{len(gm_index)}\t{method}\t{gm:.3f}\t{wm:.3f}\t{out:.4f}")


if __name__ == "__main__":
    main()
