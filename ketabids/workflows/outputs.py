"""Writing one participant's outputs into the derivative dataset."""

from __future__ import annotations

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe

from ketabids.interfaces.outputs import OUTPUT_KEYS, DerivativesOutput


def init_outputs_wf(
    *, source_file: str, output_dir: str, atlas: str, name: str = "outputs_wf"
) -> pe.Workflow:
    """inputnode: ``OUTPUT_KEYS``; outputnode: ``out_files``. The writer always runs (cheap copies),
    so outputs deleted from ``output_dir`` come back on a rerun."""
    wf = pe.Workflow(name=name)
    inputnode = pe.Node(IdentityInterface(fields=list(OUTPUT_KEYS)), name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=["out_files"]), name="outputnode")
    write = pe.Node(
        DerivativesOutput(source_file=str(source_file), output_dir=str(output_dir), atlas=atlas),
        name="write_derivatives",
        run_without_submitting=True,
    )
    write.overwrite = True
    wf.connect([
        (inputnode, write, [(key, key) for key in OUTPUT_KEYS]),
        (write, outputnode, [("out_files", "out_files")]),
    ])  # fmt: skip
    return wf
