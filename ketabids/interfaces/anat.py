"""Interfaces of anatomical preprocessing: reorientation, N4, brain extraction."""

from __future__ import annotations

import os

from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

from ketabids.interfaces.base import limit_threads


class _ReorientInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="T1w image (any orientation and data type)")


class _ReorientOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="float32 image in RAS+ voxel order (same world space)")


class Reorient(SimpleInterface):
    """Reorient to RAS+ without resampling (:func:`ketabids.processing.anat.reorient_to_ras`)."""

    input_spec = _ReorientInputSpec
    output_spec = _ReorientOutputSpec

    def _run_interface(self, runtime):
        from ketabids.processing.anat import reorient_to_ras

        out = os.path.join(runtime.cwd, "t1w_ras.nii.gz")
        self._results["out_file"] = str(reorient_to_ras(self.inputs.in_file, out))
        return runtime


class _N4InputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="T1w image")
    mask_file = File(exists=True, desc="optional mask restricting the bias-field fit")
    num_threads = traits.Int(1, usedefault=True, desc="ITK threads")


class _N4OutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="bias-corrected T1w (99.5th percentile scaled to 1000)")


class N4BiasCorrection(SimpleInterface):
    """N4 bias-field correction (:func:`ketabids.processing.anat.n4_correct`)."""

    input_spec = _N4InputSpec
    output_spec = _N4OutputSpec

    def _run_interface(self, runtime):
        from ketabids.processing.anat import n4_correct

        limit_threads(self.inputs.num_threads)
        mask = self.inputs.mask_file or None
        out = os.path.join(runtime.cwd, "t1w_n4.nii.gz")
        self._results["out_file"] = str(n4_correct(self.inputs.in_file, out, mask))
        return runtime


class _BrainExtractionInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="whole-head T1w in RAS, not bias-corrected")
    seed = traits.Int(0, usedefault=True, desc="random seed")
    num_threads = traits.Int(1, usedefault=True, desc="threads")


class _BrainExtractionOutputSpec(TraitedSpec):
    out_mask = File(exists=True, desc="brain mask (uint8)")


class BrainExtraction(SimpleInterface):
    """Brain mask from deepbet (:func:`ketabids.processing.brain.deepbet_mask`)."""

    input_spec = _BrainExtractionInputSpec
    output_spec = _BrainExtractionOutputSpec

    def _run_interface(self, runtime):
        from ketabids.processing import brain

        limit_threads(self.inputs.num_threads)
        mask = os.path.join(runtime.cwd, "brain_mask.nii.gz")
        brain.deepbet_mask(self.inputs.in_file, mask, seed=self.inputs.seed)
        self._results["out_mask"] = mask
        return runtime


class _ApplyMaskInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="image")
    mask_file = File(exists=True, mandatory=True, desc="mask on the same grid")


class _ApplyMaskOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="image with zeros outside the mask")


class ApplyMask(SimpleInterface):
    """Zero an image outside a mask (:func:`ketabids.processing.brain.apply_mask`)."""

    input_spec = _ApplyMaskInputSpec
    output_spec = _ApplyMaskOutputSpec

    def _run_interface(self, runtime):
        from ketabids.processing.brain import apply_mask

        out = os.path.join(runtime.cwd, "t1w_brain.nii.gz")
        self._results["out_file"] = str(apply_mask(self.inputs.in_file, self.inputs.mask_file, out))
        return runtime
