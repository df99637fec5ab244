"""The participant workflow: preprocessing -> registration -> segmentation -> volumes -> outputs."""

from __future__ import annotations

import os

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe

from ketabids.workflows.anatomical import init_anat_preproc_wf
from ketabids.workflows.outputs import init_outputs_wf
from ketabids.workflows.registration import init_registration_wf
from ketabids.workflows.segmentation import init_segmentation_wf
from ketabids.workflows.volumes import init_volumes_wf


def participant_wf_name(subject: str, session: str | None) -> str:
    """Node-safe name of one participant/session workflow (e.g. ``sub_01_ses_pre_wf``)."""
    return f"sub_{subject}" + (f"_ses_{session}" if session else "") + "_wf"


def init_participant_wf(
    *,
    t1w_file: str | os.PathLike,
    subject: str,
    session: str | None,
    output_dir: str | os.PathLike,
    atlas: str = "neuromorphometrics",
    omp_nthreads: int = 1,
    seed: int = 0,
    name: str | None = None,
) -> pe.Workflow:
    """All stages for one T1w; writes its derivatives into ``output_dir``."""
    wf = pe.Workflow(name=name or participant_wf_name(subject, session))
    inputnode = pe.Node(IdentityInterface(fields=["t1w"]), name="inputnode")
    inputnode.inputs.t1w = str(t1w_file)
    anat = init_anat_preproc_wf(omp_nthreads=omp_nthreads, seed=seed)
    reg = init_registration_wf(omp_nthreads=omp_nthreads, seed=seed)
    seg = init_segmentation_wf(omp_nthreads=omp_nthreads, seed=seed)
    vol = init_volumes_wf(atlas=atlas, omp_nthreads=omp_nthreads)
    out = init_outputs_wf(source_file=str(t1w_file), output_dir=str(output_dir), atlas=atlas)
    wf.connect([
        (inputnode, anat, [("t1w", "inputnode.t1w")]),
        (anat, reg, [("outputnode.t1w_brain", "inputnode.t1w_brain")]),
        (anat, seg, [("outputnode.t1w_preproc", "inputnode.t1w_preproc"),
                     ("outputnode.brain_mask", "inputnode.brain_mask")]),
        (reg, seg, [("outputnode.inverse", "inputnode.inverse")]),
        (anat, vol, [("outputnode.t1w_preproc", "inputnode.t1w_preproc"),
                     ("outputnode.brain_mask", "inputnode.brain_mask")]),
        (reg, vol, [("outputnode.forward", "inputnode.forward"), ("outputnode.inverse", "inputnode.inverse"),
                    ("outputnode.t1w_in_template", "inputnode.t1w_in_template")]),
        (seg, vol, [("outputnode.gm", "inputnode.gm"), ("outputnode.wm", "inputnode.wm"),
                    ("outputnode.csf", "inputnode.csf")]),
        (anat, out, [("outputnode.t1w_preproc", "inputnode.t1w_preproc"),
                     ("outputnode.brain_mask", "inputnode.brain_mask")]),
        (seg, out, [("outputnode.gm", "inputnode.gm"), ("outputnode.wm", "inputnode.wm"),
                    ("outputnode.csf", "inputnode.csf"), ("outputnode.dseg", "inputnode.dseg")]),
        (reg, out, [("outputnode.forward", "inputnode.forward"), ("outputnode.inverse", "inputnode.inverse"),
                    ("outputnode.t1w_in_template", "inputnode.t1w_template")]),
        (vol, out, [("outputnode.regional", "inputnode.regional"), ("outputnode.tissue", "inputnode.tissue"),
                    ("outputnode.modulated_gm", "inputnode.modulated_gm"),
                    ("outputnode.atlas_dseg", "inputnode.atlas_dseg"),
                    ("outputnode.atlas_labels", "inputnode.atlas_labels")]),
    ])  # fmt: skip
    return wf
