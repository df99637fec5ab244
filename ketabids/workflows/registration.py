"""Registration to MNI152NLin2009aSym (affine + SyN) with composite forward/inverse transforms."""

from __future__ import annotations

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe

from ketabids.interfaces.registration import RegisterToTemplate


def init_registration_wf(
    *, omp_nthreads: int = 1, seed: int = 0, name: str = "registration_wf"
) -> pe.Workflow:
    """inputnode: ``t1w_brain``; outputnode: ``forward``, ``inverse`` (HDF5), ``t1w_in_template``."""
    wf = pe.Workflow(name=name)
    inputnode = pe.Node(IdentityInterface(fields=["t1w_brain"]), name="inputnode")
    outputnode = pe.Node(
        IdentityInterface(fields=["forward", "inverse", "t1w_in_template"]), name="outputnode"
    )
    register = pe.Node(
        RegisterToTemplate(seed=seed, num_threads=omp_nthreads),
        name="register",
        n_procs=omp_nthreads,
        mem_gb=2.5,
    )
    wf.connect([
        (inputnode, register, [("t1w_brain", "in_file")]),
        (register, outputnode, [("forward", "forward"), ("inverse", "inverse"), ("warped", "t1w_in_template")]),
    ])  # fmt: skip
    return wf
