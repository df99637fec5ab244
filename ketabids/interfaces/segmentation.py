"""Interfaces of tissue segmentation: the cavity and deep-GM masks, and the partial-volume maps."""

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


class _WarpCavityInputSpec(BaseInterfaceInputSpec):
    inverse = File(exists=True, mandatory=True, desc="template -> T1w transform")
    reference = File(exists=True, mandatory=True, desc="T1w defining the output grid")
    num_threads = traits.Int(1, usedefault=True, desc="ITK threads")


class _WarpCavityOutputSpec(TraitedSpec):
    cavity = File(exists=True, desc="intracranial cavity fraction on the T1w grid")
    deep_gm = File(exists=True, desc="deep grey-nucleus mask fraction on the T1w grid")


class WarpCavity(SimpleInterface):
    """Template intracranial and deep-GM masks to T1w space
    (:func:`ketabids.processing.segmentation.warp_cavity_and_deep_gm`)."""

    input_spec = _WarpCavityInputSpec
    output_spec = _WarpCavityOutputSpec

    def _run_interface(self, runtime):
        from ketabids.processing.segmentation import warp_cavity_and_deep_gm

        limit_threads(self.inputs.num_threads)
        cavity, deep_gm = warp_cavity_and_deep_gm(self.inputs.inverse, self.inputs.reference, runtime.cwd)
        self._results.update(cavity=str(cavity), deep_gm=str(deep_gm))
        return runtime


class _SegmentInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="bias-corrected T1w")
    mask_file = File(exists=True, mandatory=True, desc="brain mask")
    priors = InputMultiObject(File(exists=True), mandatory=True, desc="GM, WM, CSF priors on the T1w grid")
    cavity = File(exists=True, mandatory=True, desc="intracranial cavity fraction on the T1w grid")
    deep_gm = File(exists=True, desc="deep grey-nucleus mask on the T1w grid")
    seed = traits.Int(0, usedefault=True, desc="random seed")
    num_threads = traits.Int(1, usedefault=True, desc="ITK threads")


class _SegmentOutputSpec(TraitedSpec):
    gm = File(exists=True, desc="GM partial-volume fraction")
    wm = File(exists=True, desc="WM partial-volume fraction")
    csf = File(exists=True, desc="CSF partial-volume fraction")
    dseg = File(exists=True, desc="hard segmentation (1 GM, 2 WM, 3 CSF)")


class SegmentTissues(SimpleInterface):
    """Atropos labels -> partial-volume fractions (:func:`ketabids.processing.segmentation.segment_tissues`)."""

    input_spec = _SegmentInputSpec
    output_spec = _SegmentOutputSpec

    def _run_interface(self, runtime):
        from ketabids.processing.segmentation import segment_tissues

        limit_threads(self.inputs.num_threads)
        if len(self.inputs.priors) != 3:
            raise ValueError("three priors (GM, WM, CSF) are needed")
        gm, wm, csf = self.inputs.priors
        result = segment_tissues(
            self.inputs.in_file,
            self.inputs.mask_file,
            (gm, wm, csf),
            self.inputs.cavity,
            self.inputs.deep_gm or None,
            runtime.cwd,
            seed=self.inputs.seed,
        )
        probabilities = [str(p) for p in result.probabilities]
        self._results.update(gm=probabilities[0], wm=probabilities[1], csf=probabilities[2])
        self._results["dseg"] = str(result.dseg)
        return runtime
