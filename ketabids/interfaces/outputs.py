"""Interface writing one participant's outputs into the derivative dataset."""

from __future__ import annotations

from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

OUTPUT_KEYS = (
    "t1w_preproc",
    "brain_mask",
    "gm",
    "wm",
    "csf",
    "dseg",
    "forward",
    "inverse",
    "t1w_template",
    "modulated_gm",
    "regional",
    "tissue",
    "atlas_dseg",
    "atlas_labels",
)


class _DerivativesInputSpec(BaseInterfaceInputSpec):
    source_file = File(mandatory=True, desc="the input T1w (its name gives the entities)")
    output_dir = traits.Str(mandatory=True, desc="derivative dataset root")
    atlas = traits.Str(mandatory=True, desc="atlas name")


for _key in OUTPUT_KEYS:
    _DerivativesInputSpec.add_class_trait(_key, File(exists=True, mandatory=True, desc=f"{_key} file"))


class _DerivativesOutputSpec(TraitedSpec):
    out_files = traits.List(traits.Str, desc="written derivative paths")


class DerivativesOutput(SimpleInterface):
    """Write the output contract (:func:`ketabids.outputs.write_participant_outputs`)."""

    input_spec = _DerivativesInputSpec
    output_spec = _DerivativesOutputSpec

    def _run_interface(self, runtime):
        from ketabids.outputs import write_participant_outputs

        files = {key: getattr(self.inputs, key) for key in OUTPUT_KEYS}
        written = write_participant_outputs(
            self.inputs.source_file, self.inputs.output_dir, self.inputs.atlas, files
        )
        self._results["out_files"] = [str(p) for p in written.values()]
        return runtime
