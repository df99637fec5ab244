"""Anatomical preprocessing: reorient to RAS -> brain extraction -> N4 within the brain."""

from __future__ import annotations

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe

from ketabids.interfaces.anat import ApplyMask, BrainExtraction, N4BiasCorrection, Reorient


def init_anat_preproc_wf(
    *, omp_nthreads: int = 1, seed: int = 0, name: str = "anat_preproc_wf"
) -> pe.Workflow:
    """Reorient (lossless), extract the brain (deepbet) on the raw image, fit N4 within the brain mask.

    inputnode: ``t1w``; outputnode: ``t1w_preproc`` (bias-corrected, whole head), ``brain_mask``,
    ``t1w_brain`` (bias-corrected, zero outside the mask).
    """
    wf = pe.Workflow(name=name)
    inputnode = pe.Node(IdentityInterface(fields=["t1w"]), name="inputnode")
    outputnode = pe.Node(
        IdentityInterface(fields=["t1w_preproc", "brain_mask", "t1w_brain"]), name="outputnode"
    )
    reorient = pe.Node(Reorient(), name="reorient")
    bet = pe.Node(
        BrainExtraction(seed=seed, num_threads=omp_nthreads),
        name="brain_extraction",
        n_procs=omp_nthreads,
        mem_gb=2.0,
    )
    n4 = pe.Node(N4BiasCorrection(num_threads=omp_nthreads), name="n4", n_procs=omp_nthreads, mem_gb=1.0)
    mask_brain = pe.Node(ApplyMask(), name="mask_brain")
    wf.connect([
        (inputnode, reorient, [("t1w", "in_file")]),
        (reorient, bet, [("out_file", "in_file")]),
        (reorient, n4, [("out_file", "in_file")]),
        (bet, n4, [("out_mask", "mask_file")]),
        (n4, mask_brain, [("out_file", "in_file")]),
        (bet, mask_brain, [("out_mask", "mask_file")]),
        (n4, outputnode, [("out_file", "t1w_preproc")]),
        (bet, outputnode, [("out_mask", "brain_mask")]),
        (mask_brain, outputnode, [("out_file", "t1w_brain")]),
    ])  # fmt: skip
    return wf
