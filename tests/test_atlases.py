"""Shipped MNI152NLin2009aSym atlases: provenance, documented labels, alignment to the template, refusals."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from nilearn.image import resample_to_img

from ketabids.cli import main
from ketabids.data import atlases
from ketabids.data.atlases import (
    SOURCES,
    AtlasError,
    check_atlas,
    load_atlas,
    load_source_atlas,
    sha256,
    source_files,
)
from ketabids.data.make_atlases import label_fit
from ketabids.data.templates import load_template

# name -> (labels, GM-feature labels) as documented in README and ATLASES
COUNTS = {"neuromorphometrics": (136, 121), "aal": (120, 120), "harvard_oxford": (113, 110)}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_shipped_atlas_is_on_the_template_grid_with_its_documented_labels(name):
    atlas, template = load_atlas(name), load_template()
    assert atlas.image.shape == template.t1w.shape
    np.testing.assert_allclose(atlas.image.affine, template.affine)
    present = set(np.unique(np.asarray(atlas.image.dataobj)).tolist()) - {0}
    assert present == set(atlas.labels["index"])
    assert (len(atlas.labels), len(atlas.gm_labels)) == COUNTS[name]
    assert list(atlas.labels.columns) == ["index", "name", "tissue", "gm_feature"]
    assert (atlas.labels["gm_feature"] == (atlas.labels["tissue"] == "gm")).all()
    assert set(atlas.labels["name"]) == set(load_source_atlas(name).atlas.labels["name"])


def test_label_names_identify_the_atlas_versions():
    aal = set(load_atlas("aal").labels["name"])
    assert {"OFCmed_L", "OFCpost_R", "Thalamus_L", "Cerebelum_Crus1_L", "Vermis_10"} <= aal  # AAL2
    assert not any(n.startswith("Thal_") for n in aal)  # AAL3 splits the thalamus into nuclei
    nmm = load_atlas("neuromorphometrics").labels.set_index("name")["tissue"]
    assert nmm["Left_Hippocampus"] == "gm" and nmm["Left_Cerebellum_Exterior"] == "gm"
    assert nmm["Left_Lateral_Ventricle"] == "csf" and nmm["Left_Cerebral_White_Matter"] == "wm"
    ho = load_atlas("harvard_oxford").labels.set_index("name")["tissue"]
    assert ho["Left_Hippocampus"] == "gm" and ho["Brain-Stem"] == "other"


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_provenance_names_the_source_files_reference_and_registration(name):
    record = check_atlas(name)
    image, table = source_files(name)
    assert record["source"]["image_sha256"] == sha256(image)
    assert record["source"]["labels_sha256"] == sha256(table)
    assert record["space"] == "MNI152NLin2009aSym"
    args = record["registration"]["arguments"]
    assert any(a.startswith("SyN[") for a in args) and "--random-seed" in args
    reference = load_source_atlas(name).reference
    if name == "harvard_oxford":  # FSL's MNI152NLin6Asym brain, the template the atlas was built on
        assert reference is not None and reference.name == "MNI152_T1_1mm_brain.nii.gz"
        assert record["reference"]["sha256"] == sha256(reference)
    else:  # SPM-space atlases whose reference image does not ship: their own tissue labels
        assert reference is None and record["reference"]["classes"]


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_registered_labels_fit_the_template_anatomy_better_than_naive_resampling(name):
    """Registered: more template GM and less WM under the GM labels than the source resampled as if it
    were already in the template's space; few GM labels outside the template brain."""
    source, atlas = load_source_atlas(name).atlas, load_atlas(name)
    naive = resample_to_img(
        source.image, load_template().t1w, interpolation="nearest", force_resample=True, copy_header=True
    )
    gm_index = atlas.gm_labels["index"].to_numpy()
    gm_naive, wm_naive, out_naive = label_fit(np.asarray(naive.dataobj), gm_index)
    gm_reg, wm_reg, out_reg = label_fit(np.asarray(atlas.image.dataobj), gm_index)
    assert gm_reg > gm_naive + 0.002
    assert wm_reg < wm_naive - 0.015
    assert out_reg < 0.02
    if name == "aal":  # drawn on another brain (Colin27): the naive labels spill out of the template brain
        assert out_reg < 0.2 * out_naive


def _tampered_copy(tmp_path, monkeypatch, name, edit):
    folder = tmp_path / "atlas_maps"
    shutil.copytree(atlases.SHIPPED_DIR, folder)
    monkeypatch.setattr(atlases, "SHIPPED_DIR", folder)
    edit(atlases.shipped_files(name))
    load_atlas.cache_clear()


def _drop_record(paths):
    paths[2].unlink()


def _corrupt_record(paths):
    paths[2].write_text("{not json")


def _other_image(paths):
    nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4)).to_filename(str(paths[0]))


def _wrong_space(paths):
    record = json.loads(paths[2].read_text())
    record["space"] = "MNI152NLin6Asym"
    paths[2].write_text(json.dumps(record))


@pytest.mark.parametrize("edit", [_drop_record, _corrupt_record, _other_image, _wrong_space])
def test_atlas_without_valid_provenance_is_refused(tmp_path, monkeypatch, edit):
    _tampered_copy(tmp_path, monkeypatch, "aal", edit)
    try:
        with pytest.raises(AtlasError, match="aal"):
            load_atlas("aal")
        load_atlas("neuromorphometrics")  # the others still load
    finally:
        load_atlas.cache_clear()


def test_unknown_atlas_is_refused():
    with pytest.raises(AtlasError, match="unknown atlas 'aicha'"):
        load_atlas("aicha")
    with pytest.raises(AtlasError, match="unknown atlas"):
        load_source_atlas("talairach_ba")


def test_cli_refuses_unsupported_or_unproven_atlas_with_exit_64(tmp_path, monkeypatch, caplog):
    bids = tmp_path / "bids"
    bids.mkdir()
    argv = [str(bids), str(tmp_path / "out"), "participant", "--skip-bids-validation"]
    assert main([*argv, "--atlas", "aicha"]) == 64
    _tampered_copy(tmp_path, monkeypatch, "aal", _drop_record)
    try:
        caplog.clear()
        assert main([*argv, "--atlas", "aal"]) == 64
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and "aal" in errors[0] and "provenance" in errors[0]
        assert not (tmp_path / "out").exists()
    finally:
        load_atlas.cache_clear()
