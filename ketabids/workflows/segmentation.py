"""GM/WM/CSF partial-volume segmentation inside the intracranial cavity brought from the template."""

from __future__ import annotations

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe

from ketabids.interfaces.registration import WarpPriors
from ketabids.interfaces.segmentation import SegmentTissues, WarpCavity


def init_segmentation_wf(
    *, omp_nthreads: int = 1, seed: int = 0, name: str = "segmentation_wf"
) -> pe.Workflow:
    """inputnode: ``t1w_preproc``, ``brain_mask``, ``inverse``; outputnode: ``gm``, ``wm``, ``csf``, ``dseg``."""
    wf = pe.Workflow(name=name)
    inputnode = pe.Node(IdentityInterface(fields=["t1w_preproc", "brain_mask", "inverse"]), name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=["gm", "wm", "csf", "dseg"]), name="outputnode")
    priors = pe.Node(WarpPriors(num_threads=omp_nthreads), name="warp_priors", n_procs=omp_nthreads)
    cavity = pe.Node(WarpCavity(num_threads=omp_nthreads), name="warp_cavity", n_procs=omp_nthreads)
    atropos = pe.Node(
        SegmentTissues(seed=seed, num_threads=omp_nthreads), name="atropos", n_procs=omp_nthreads, mem_gb=2.0
    )
    wf.connect([
        (inputnode, priors, [("inverse", "inverse"), ("t1w_preproc", "reference")]),
        (inputnode, cavity, [("inverse", "inverse"), ("t1w_preproc", "reference")]),
        (inputnode, atropos, [("t1w_preproc", "in_file"), ("brain_mask", "mask_file")]),
        (priors, atropos, [("priors", "priors")]),
        (cavity, atropos, [("cavity", "cavity"), ("deep_gm", "deep_gm")]),
        (atropos, outputnode, [("gm", "gm"), ("wm", "wm"), ("csf", "csf"), ("dseg", "dseg")]),
    ])  # fmt: skip
    return wf
