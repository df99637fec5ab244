"""Regional GM volumes (atlas to T1w), tissue totals, QC and the Jacobian-modulated GM map."""

from __future__ import annotations

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe

from ketabids.interfaces.morphometry import Morphometry
from ketabids.interfaces.registration import ModulatedGM, WarpAtlas

INPUT_FIELDS = ["t1w_preproc", "brain_mask", "gm", "wm", "csf", "forward", "inverse", "t1w_in_template"]
OUTPUT_FIELDS = ["regional", "tissue", "modulated_gm", "atlas_dseg", "atlas_labels"]


def init_volumes_wf(*, atlas: str, omp_nthreads: int = 1, name: str = "volumes_wf") -> pe.Workflow:
    """inputnode: ``INPUT_FIELDS``; outputnode: ``regional``, ``tissue`` (TSV), ``modulated_gm``,
    ``atlas_dseg`` (the atlas labels on the T1w grid) and ``atlas_labels`` (their label table)."""
    wf = pe.Workflow(name=name)
    inputnode = pe.Node(IdentityInterface(fields=INPUT_FIELDS), name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=OUTPUT_FIELDS), name="outputnode")
    warp_atlas = pe.Node(
        WarpAtlas(atlas=atlas, num_threads=omp_nthreads), name="warp_atlas", n_procs=omp_nthreads
    )
    morphometry = pe.Node(Morphometry(atlas=atlas), name="morphometry", mem_gb=1.5)
    modulate = pe.Node(
        ModulatedGM(num_threads=omp_nthreads), name="modulate", n_procs=omp_nthreads, mem_gb=1.5
    )
    wf.connect([
        (inputnode, warp_atlas, [("inverse", "inverse"), ("t1w_preproc", "reference")]),
        (inputnode, morphometry, [
            ("t1w_preproc", "t1w"), ("brain_mask", "mask"), ("gm", "gm"), ("wm", "wm"), ("csf", "csf"),
            ("t1w_in_template", "t1w_in_template"),
        ]),
        (warp_atlas, morphometry, [("out_file", "atlas_labels")]),
        (inputnode, modulate, [("gm", "gm_file"), ("forward", "forward"), ("t1w_in_template", "reference")]),
        (morphometry, outputnode, [("regional", "regional"), ("tissue", "tissue")]),
        (modulate, outputnode, [("out_file", "modulated_gm")]),
        (warp_atlas, outputnode, [("out_file", "atlas_dseg"), ("out_table", "atlas_labels")]),
    ])  # fmt: skip
    return wf
