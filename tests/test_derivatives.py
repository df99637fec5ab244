"""Derivative names, atomic writes and dataset-level files."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pandas as pd
import pytest

from ketabids.derivatives import (
    atomic_write,
    derivative_name,
    derivative_path,
    parse_entities,
    write_bidsignore,
    write_dataset_description,
    write_dseg_tsv,
    write_tsv_atomic,
)


def test_parse_entities_drops_suffix_and_extension():
    assert parse_entities("/x/sub-01_ses-pre_run-2_T1w.nii.gz") == {"sub": "01", "ses": "pre", "run": "2"}


@pytest.mark.parametrize(
    ("source", "kwargs", "expected"),
    [
        ("sub-01_T1w.nii.gz", {"suffix": "mask", "desc": "brain"}, "sub-01_desc-brain_mask.nii.gz"),
        (
            "sub-01_ses-pre_acq-mprage_run-2_T1w.nii.gz",
            {"suffix": "probseg", "label": "GM"},
            "sub-01_ses-pre_acq-mprage_run-2_label-GM_probseg.nii.gz",
        ),
        (
            "sub-01_ses-pre_T1w.nii",
            {
                "suffix": "xfm",
                "extension": ".h5",
                "from_": "T1w",
                "to": "MNI152NLin2009aSym",
                "mode": "image",
            },
            "sub-01_ses-pre_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.h5",
        ),
        (
            "sub-01_T1w.nii.gz",
            {"suffix": "probseg", "space": "MNI152NLin2009aSym", "label": "GM", "desc": "modulated"},
            "sub-01_space-MNI152NLin2009aSym_label-GM_desc-modulated_probseg.nii.gz",
        ),
        (
            "sub-01_T1w.nii.gz",
            {"suffix": "morph", "extension": ".tsv", "seg": "aal"},
            "sub-01_seg-aal_morph.tsv",
        ),
    ],
)
def test_derivative_names(source, kwargs, expected):
    assert derivative_name(source, **kwargs) == expected


def test_derivative_name_rejects_non_bids_and_unknown_entities():
    with pytest.raises(ValueError, match="not a BIDS"):
        derivative_name("T1w.nii.gz", suffix="mask")
    with pytest.raises(ValueError, match="unknown"):
        derivative_name("sub-01_T1w.nii.gz", suffix="mask", hemi="L")


def test_multisession_multirun_outputs_are_indexed_by_pybids(tmp_path, tiny_bids):
    from bids import BIDSLayout

    bids_dir = tiny_bids(subjects=("01", "02"), sessions=("pre", "post"), runs=2)
    out = tmp_path / "out"
    out.mkdir()
    write_dataset_description(out, bids_dir)
    sources = sorted(bids_dir.rglob("*_T1w.nii.gz"))
    assert len(sources) == 8
    for source in sources:
        for label in ("GM", "WM", "CSF"):
            path = derivative_path(source, out, suffix="probseg", label=label)
            path.write_bytes(b"x")
    layout = BIDSLayout(out, validate=False, is_derivative=True)
    found = layout.get(subject="02", session="post", run=2, label="GM", suffix="probseg")
    assert [Path(f.path).name for f in found] == ["sub-02_ses-post_run-2_label-GM_probseg.nii.gz"]
    assert Path(found[0].path).parent == out / "sub-02" / "ses-post" / "anat"
    assert len(layout.get(suffix="probseg")) == 24
    assert sorted(layout.get_sessions()) == ["post", "pre"]


def test_atomic_write_failure_keeps_old_content_and_leaves_no_temp(tmp_path):
    target = tmp_path / "table.tsv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.tsv"]


def test_atomic_write_keeps_extension_for_format_sniffing_writers(tmp_path):
    with atomic_write(tmp_path / "img.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.name.startswith(".")
        tmp.write_bytes(b"data")
    assert (tmp_path / "img.nii.gz").read_bytes() == b"data"


def test_concurrent_atomic_writes_never_expose_a_partial_file(tmp_path):
    target = tmp_path / "shared.tsv"
    payloads = [("x" * 200_000 + f"{i}\n") for i in range(2)]
    target.write_text(payloads[0])
    seen: list[str] = []
    stop = threading.Event()

    def writer(text: str) -> None:
        for _ in range(30):
            with atomic_write(target) as tmp:
                tmp.write_text(text)

    def reader() -> None:
        while not stop.is_set():
            seen.append(target.read_text())

    threads = [threading.Thread(target=writer, args=(p,)) for p in payloads]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    assert seen and all(text in payloads for text in seen)
    assert not [p for p in tmp_path.iterdir() if p.name != "shared.tsv"]


def test_dataset_level_files(tmp_path, tiny_bids, monkeypatch):
    from ketabids import __version__

    monkeypatch.setenv("KETABIDS_CONTAINER_IMAGE", "ketabids/ketabids:test")
    bids_dir = tiny_bids()
    out = tmp_path / "out"
    description = json.loads(write_dataset_description(out, bids_dir).read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "ketabids"
    assert description["GeneratedBy"][0]["Version"] == __version__
    assert description["GeneratedBy"][0]["Container"]["Tag"] == "ketabids/ketabids:test"
    assert description["SourceDatasets"][0]["URL"].startswith("file://")
    (out / ".bidsignore").write_text("custom/\n")
    write_bidsignore(out)
    write_bidsignore(out)
    lines = (out / ".bidsignore").read_text().splitlines()
    assert lines[0] == "custom/" and lines.count("*_morph.tsv") == 1 and "group/" in lines
    dseg = pd.read_csv(write_dseg_tsv(out), sep="\t")
    assert dseg.to_dict("list") == {"index": [1, 2, 3], "name": ["GM", "WM", "CSF"]}


def test_write_tsv_atomic_uses_bids_missing_values(tmp_path):
    path = write_tsv_atomic(pd.DataFrame({"a": [1.0, None]}), tmp_path / "t.tsv")
    assert path.read_text().splitlines() == ["a", "1.0", "n/a"]


def test_sidecar_sits_next_to_its_image(tmp_path):
    from ketabids.derivatives import sidecar_path, write_sidecar

    image = tmp_path / "sub-01_desc-preproc_T1w.nii.gz"
    assert sidecar_path(image) == tmp_path / "sub-01_desc-preproc_T1w.json"
    written = write_sidecar(image, {"SkullStripped": False})
    assert json.loads(written.read_text()) == {"SkullStripped": False}
