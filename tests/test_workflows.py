"""Graphs of the init_*_wf factories: nodes and connections."""

from __future__ import annotations

from ketabids.interfaces.outputs import OUTPUT_KEYS
from ketabids.workflows.anatomical import init_anat_preproc_wf
from ketabids.workflows.outputs import init_outputs_wf
from ketabids.workflows.participant import init_participant_wf, participant_wf_name
from ketabids.workflows.registration import init_registration_wf
from ketabids.workflows.segmentation import init_segmentation_wf
from ketabids.workflows.volumes import init_volumes_wf


def edges(wf) -> set[tuple[str, str, str, str]]:
    """(source node, source field, destination node, destination field) of a flat workflow."""
    found = set()
    for src, dst, data in wf._graph.edges(data=True):
        for out_field, in_field in data["connect"]:
            found.add((src.name, out_field, dst.name, in_field))
    return found


def test_anat_preproc_graph():
    wf = init_anat_preproc_wf(omp_nthreads=2, seed=3)
    assert set(wf.list_node_names()) == {
        "inputnode", "reorient", "brain_extraction", "n4", "mask_brain", "outputnode"
    }  # fmt: skip
    assert {
        ("inputnode", "t1w", "reorient", "in_file"),
        ("reorient", "out_file", "brain_extraction", "in_file"),
        ("reorient", "out_file", "n4", "in_file"),
        ("brain_extraction", "out_mask", "n4", "mask_file"),
        ("n4", "out_file", "outputnode", "t1w_preproc"),
        ("brain_extraction", "out_mask", "outputnode", "brain_mask"),
        ("mask_brain", "out_file", "outputnode", "t1w_brain"),
    } <= edges(wf)
    bet = wf.get_node("brain_extraction")
    assert (bet.inputs.seed, bet.inputs.num_threads, bet.n_procs) == (3, 2, 2)


def test_registration_graph_passes_seed_and_threads():
    wf = init_registration_wf(omp_nthreads=2, seed=5)
    register = wf.get_node("register")
    assert (register.inputs.seed, register.inputs.num_threads) == (5, 2)
    assert {
        ("inputnode", "t1w_brain", "register", "in_file"),
        ("register", "forward", "outputnode", "forward"),
        ("register", "inverse", "outputnode", "inverse"),
        ("register", "warped", "outputnode", "t1w_in_template"),
    } == edges(wf)


def test_segmentation_graph():
    assert {
        ("inputnode", "inverse", "warp_priors", "inverse"),
        ("inputnode", "t1w_preproc", "warp_priors", "reference"),
        ("inputnode", "t1w_preproc", "atropos", "in_file"),
        ("inputnode", "brain_mask", "atropos", "mask_file"),
        ("warp_priors", "priors", "atropos", "priors"),
        ("inputnode", "inverse", "warp_cavity", "inverse"),
        ("warp_cavity", "cavity", "atropos", "cavity"),
        ("warp_cavity", "deep_gm", "atropos", "deep_gm"),
        ("atropos", "gm", "outputnode", "gm"),
        ("atropos", "dseg", "outputnode", "dseg"),
    } <= edges(init_segmentation_wf())


def test_volumes_graph_uses_inverse_for_atlas_and_forward_for_modulation():
    wf = init_volumes_wf(atlas="aal")
    assert wf.get_node("warp_atlas").inputs.atlas == "aal"
    assert wf.get_node("morphometry").inputs.atlas == "aal"
    assert {
        ("inputnode", "inverse", "warp_atlas", "inverse"),
        ("warp_atlas", "out_file", "morphometry", "atlas_labels"),
        ("inputnode", "gm", "morphometry", "gm"),
        ("inputnode", "forward", "modulate", "forward"),
        ("inputnode", "gm", "modulate", "gm_file"),
        ("morphometry", "regional", "outputnode", "regional"),
        ("morphometry", "tissue", "outputnode", "tissue"),
        ("modulate", "out_file", "outputnode", "modulated_gm"),
        ("warp_atlas", "out_file", "outputnode", "atlas_dseg"),
        ("warp_atlas", "out_table", "outputnode", "atlas_labels"),
    } <= edges(wf)


def test_outputs_graph_feeds_every_output_key(tmp_path):
    wf = init_outputs_wf(source_file="sub-01_T1w.nii.gz", output_dir=str(tmp_path), atlas="aal")
    assert {("inputnode", key, "write_derivatives", key) for key in OUTPUT_KEYS} <= edges(wf)
    assert wf.get_node("write_derivatives").overwrite is True


def test_participant_graph_connects_stages():
    wf = init_participant_wf(
        t1w_file="/data/sub-01/ses-pre/anat/sub-01_ses-pre_T1w.nii.gz",
        subject="01",
        session="pre",
        output_dir="/out",
        atlas="neuromorphometrics",
        omp_nthreads=2,
        seed=1,
    )
    assert wf.name == participant_wf_name("01", "pre") == "sub_01_ses_pre_wf"
    names = set(wf.list_node_names())
    for node in (
        "anat_preproc_wf.brain_extraction",
        "registration_wf.register",
        "segmentation_wf.atropos",
        "volumes_wf.morphometry",
        "volumes_wf.modulate",
        "outputs_wf.write_derivatives",
    ):
        assert node in names
    stage_edges = {(src.name, dst.name) for src, dst in wf._graph.edges()}
    assert {
        ("inputnode", "anat_preproc_wf"),
        ("anat_preproc_wf", "registration_wf"),
        ("registration_wf", "segmentation_wf"),
        ("segmentation_wf", "volumes_wf"),
        ("registration_wf", "volumes_wf"),
        ("volumes_wf", "outputs_wf"),
    } <= stage_edges
    assert wf.get_node("inputnode").inputs.t1w.endswith("sub-01_ses-pre_T1w.nii.gz")
