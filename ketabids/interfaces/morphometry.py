"""Interface computing the regional GM volumes, tissue totals and QC metrics of one participant."""

from __future__ import annotations

import os

from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits


class _MorphometryInputSpec(BaseInterfaceInputSpec):
    t1w = File(exists=True, mandatory=True, desc="bias-corrected T1w")
    mask = File(exists=True, mandatory=True, desc="brain mask")
    gm = File(exists=True, mandatory=True, desc="GM probability")
    wm = File(exists=True, mandatory=True, desc="WM probability")
    csf = File(exists=True, mandatory=True, desc="CSF probability")
    atlas_labels = File(exists=True, mandatory=True, desc="atlas labels on the T1w grid")
    atlas = traits.Str(mandatory=True, desc="atlas name")
    t1w_in_template = File(exists=True, mandatory=True, desc="T1w resampled to the template")


class _MorphometryOutputSpec(TraitedSpec):
    regional = File(exists=True, desc="regional GM volumes (TSV)")
    tissue = File(exists=True, desc="tissue volumes, TIV and QC metrics (TSV, one row)")


class Morphometry(SimpleInterface):
    """Regional and tissue tables (:func:`ketabids.processing.volumes.measure`)."""

    input_spec = _MorphometryInputSpec
    output_spec = _MorphometryOutputSpec

    def _run_interface(self, runtime):
        from ketabids.processing.brain import METHOD
        from ketabids.processing.volumes import measure

        inputs = self.inputs
        regional, tissue = measure(
            t1w=inputs.t1w,
            mask=inputs.mask,
            gm=inputs.gm,
            wm=inputs.wm,
            csf=inputs.csf,
            atlas_labels=inputs.atlas_labels,
            atlas=inputs.atlas,
            t1w_in_template=inputs.t1w_in_template,
            brain_extraction=METHOD,
        )
        for name, table in (("regional", regional), ("tissue", tissue)):
            path = os.path.join(runtime.cwd, f"{name}.tsv")
            table.to_csv(path, sep="\t", index=False, na_rep="n/a")
            self._results[name] = path
        return runtime
