"""Interface of tissue segmentation (Atropos with template priors)."""

from __future__ import annotations

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from ketabids.interfaces.base import limit_threads


class _SegmentInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="bias-corrected T1w")
    mask_file = File(exists=True, mandatory=True, desc="brain mask")
    priors = InputMultiObject(File(exists=True), mandatory=True, desc="GM, WM, CSF priors on the T1w grid")
    seed = traits.Int(0, usedefault=True, desc="random seed")
    num_threads = traits.Int(1, usedefault=True, desc="ITK threads")


class _SegmentOutputSpec(TraitedSpec):
    gm = File(exists=True, desc="GM probability")
    wm = File(exists=True, desc="WM probability")
    csf = File(exists=True, desc="CSF probability")
    dseg = File(exists=True, desc="hard segmentation (1 GM, 2 WM, 3 CSF)")


class SegmentTissues(SimpleInterface):
    """Atropos with priors (:func:`ketabids.processing.segmentation.segment_tissues`)."""

    input_spec = _SegmentInputSpec
    output_spec = _SegmentOutputSpec

    def _run_interface(self, runtime):
        from ketabids.processing.segmentation import segment_tissues

        limit_threads(self.inputs.num_threads)
        if len(self.inputs.priors) != 3:
            raise ValueError("three priors (GM, WM, CSF) are needed")
        gm, wm, csf = self.inputs.priors
        result = segment_tissues(
            self.inputs.in_file, self.inputs.mask_file, (gm, wm, csf), runtime.cwd, seed=self.inputs.seed
        )
        probabilities = [str(p) for p in result.probabilities]
        self._results.update(gm=probabilities[0], wm=probabilities[1], csf=probabilities[2])
        self._results["dseg"] = str(result.dseg)
        return runtime
