"""Interfaces of template registration: SyN, warping priors/atlas, Jacobian-modulated GM."""

from __future__ import annotations

import os

from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

from ketabids.interfaces.base import limit_threads


class _RegisterInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="brain-extracted, bias-corrected T1w")
    seed = traits.Int(0, usedefault=True, desc="ANTs random seed")
    num_threads = traits.Int(1, usedefault=True, desc="ITK threads")


class _RegisterOutputSpec(TraitedSpec):
    forward = File(exists=True, desc="composite HDF5 transform T1w -> template")
    inverse = File(exists=True, desc="composite HDF5 transform template -> T1w")
    warped = File(exists=True, desc="T1w resampled onto the 1.5 mm template grid")


class RegisterToTemplate(SimpleInterface):
    """Affine + SyN to MNI152NLin2009aSym (:func:`ketabids.processing.registration.register_to_template`)."""

    input_spec = _RegisterInputSpec
    output_spec = _RegisterOutputSpec

    def _run_interface(self, runtime):
        from ketabids.processing.registration import register_to_template

        limit_threads(self.inputs.num_threads)
        result = register_to_template(self.inputs.in_file, runtime.cwd, seed=self.inputs.seed)
        self._results.update(
            forward=str(result.forward), inverse=str(result.inverse), warped=str(result.warped)
        )
        return runtime


class _WarpPriorsInputSpec(BaseInterfaceInputSpec):
    inverse = File(exists=True, mandatory=True, desc="template -> T1w transform")
    reference = File(exists=True, mandatory=True, desc="T1w defining the output grid")
    num_threads = traits.Int(1, usedefault=True, desc="ITK threads")


class _WarpPriorsOutputSpec(TraitedSpec):
    priors = traits.List(File(exists=True), desc="GM, WM, CSF template priors on the T1w grid")


class WarpPriors(SimpleInterface):
    """Template tissue priors to T1w space (:func:`ketabids.processing.registration.warp_template_priors`)."""

    input_spec = _WarpPriorsInputSpec
    output_spec = _WarpPriorsOutputSpec

    def _run_interface(self, runtime):
        from ketabids.processing.registration import warp_template_priors

        limit_threads(self.inputs.num_threads)
        paths = warp_template_priors(self.inputs.inverse, self.inputs.reference, runtime.cwd)
        self._results["priors"] = [str(p) for p in paths]
        return runtime


class _WarpAtlasInputSpec(BaseInterfaceInputSpec):
    atlas = traits.Str(mandatory=True, desc="atlas name (ketabids.data.atlases.ATLASES)")
    inverse = File(exists=True, mandatory=True, desc="template -> T1w transform")
    reference = File(exists=True, mandatory=True, desc="T1w defining the output grid")
    num_threads = traits.Int(1, usedefault=True, desc="ITK threads")


class _WarpAtlasOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="atlas labels on the T1w grid")
    out_table = File(exists=True, desc="the atlas's label table (index, name, tissue, gm_feature)")


class WarpAtlas(SimpleInterface):
    """Atlas labels to T1w space (:func:`ketabids.processing.registration.warp_atlas`)."""

    input_spec = _WarpAtlasInputSpec
    output_spec = _WarpAtlasOutputSpec

    def _run_interface(self, runtime):
        from ketabids.data.atlases import load_atlas
        from ketabids.processing.registration import warp_atlas

        limit_threads(self.inputs.num_threads)
        out = os.path.join(runtime.cwd, f"atlas-{self.inputs.atlas}_labels.nii.gz")
        atlas = load_atlas(self.inputs.atlas)
        warped = warp_atlas(atlas.image, self.inputs.inverse, self.inputs.reference, out)
        self._results["out_file"] = str(warped)
        table = os.path.join(runtime.cwd, f"atlas-{self.inputs.atlas}_dseg.tsv")
        atlas.labels.to_csv(table, sep="\t", index=False)
        self._results["out_table"] = table
        return runtime


class _ModulateInputSpec(BaseInterfaceInputSpec):
    gm_file = File(exists=True, mandatory=True, desc="native GM probability")
    forward = File(exists=True, mandatory=True, desc="T1w -> template transform")
    reference = File(exists=True, mandatory=True, desc="image on the template grid")
    num_threads = traits.Int(1, usedefault=True, desc="ITK threads")


class _ModulateOutputSpec(TraitedSpec):
    jacobian = File(exists=True, desc="Jacobian determinant (native/template volume) on the template grid")
    out_file = File(exists=True, desc="Jacobian-modulated GM on the template grid")


class ModulatedGM(SimpleInterface):
    """GM warped to the template and multiplied by the Jacobian determinant (volume preserving)."""

    input_spec = _ModulateInputSpec
    output_spec = _ModulateOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nib

        from ketabids.morphometry import modulate
        from ketabids.processing.registration import apply_transform, jacobian_determinant

        limit_threads(self.inputs.num_threads)
        cwd = runtime.cwd
        jacobian = jacobian_determinant(
            self.inputs.forward, self.inputs.reference, os.path.join(cwd, "jacobian.nii.gz")
        )
        warped = apply_transform(
            self.inputs.gm_file,
            self.inputs.reference,
            self.inputs.forward,
            os.path.join(cwd, "gm_mni.nii.gz"),
        )
        gm_img = nib.load(str(warped))
        modulated = modulate(gm_img.get_fdata(dtype="float32"), nib.load(str(jacobian)).get_fdata())
        out = os.path.join(cwd, "gm_modulated.nii.gz")
        nib.Nifti1Image(modulated, gm_img.affine).to_filename(out)
        self._results.update(jacobian=str(jacobian), out_file=out)
        return runtime
