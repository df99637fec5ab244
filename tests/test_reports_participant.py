"""The participant HTML report: sections, embedded images, numbers, QC flag, no network, atomic writes."""

from __future__ import annotations

import base64
import io
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn.image import resample_img

from ketabids.data import load_atlas, load_template
from ketabids.reports import figures, participant
from ketabids.reports.figures import cut_coords
from ketabids.reports.methods import participant_methods, software_versions
from ketabids.reports.participant import (
    SessionInputs,
    qc_flag,
    qc_table,
    write_participant_report,
    write_subject_report,
)
from ketabids.reports.screenshot import has_chromium, screenshot

VOID = {"meta", "img", "br", "hr", "link", "input", "source", "col", "area", "base", "wbr"}
PLAUSIBLE_QC = {
    "cjv": 0.45,
    "cnr": 3.1,
    "snr": 21.0,
    "registration_correlation": 0.9,
    "brain_volume_mm3": 1.2e6,
}
TISSUE = {"tiv_mm3": 1_500_000.0, "gm_volume_mm3": 700_000.0, "wm_volume_mm3": 500_000.0}


class _Html(HTMLParser):
    """Checks that tags nest and collects ids, links, image sources and table cells."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.images: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag not in VOID:
            self.stack.append(tag)
        if attributes.get("id"):
            self.ids.add(attributes["id"])
        for name in ("href", "src"):
            if attributes.get(name):
                self.links.append(attributes[name])
        if tag == "img":
            self.images.append(attributes["src"])
        if tag == "table":
            self._table = attributes.get("class", "")
            self.tables.setdefault(self._table, [])
        if tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        if tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def parse(path: Path) -> _Html:
    parser = _Html()
    parser.feed(path.read_text())
    parser.close()
    return parser


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """3 mm T1w, mask and dseg made from the template, in LPS orientation with an oblique tilt."""
    folder = tmp_path_factory.mktemp("images")
    template = load_template()
    angle = 0.2
    rotation = np.eye(4)
    rotation[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    target = rotation @ np.diag([-3.0, -3.0, 3.0, 1.0])
    target[:3, 3] = [90, 120, -75]

    def resample(img: nib.Nifti1Image, interpolation: str) -> np.ndarray:
        out = resample_img(img, target, target_shape=(62, 74, 62), interpolation=interpolation)
        return out.get_fdata()

    t1w = resample(template.t1w, "continuous")
    mask = resample(template.mask, "nearest") > 0
    priors = np.stack([resample(template.gm, "linear"), resample(template.wm, "linear")])
    priors = np.concatenate([priors, resample(template.csf, "linear")[None]])
    dseg = np.where(mask, priors.argmax(axis=0) + 1, 0)
    paths = {}
    for name, data, dtype in (("t1w", t1w, np.float32), ("mask", mask, np.uint8), ("dseg", dseg, np.uint8)):
        paths[name] = folder / f"sub-01_{name}.nii.gz"
        nib.save(nib.Nifti1Image(data.astype(dtype), target), paths[name])
    paths["atlas"] = folder / "sub-01_seg-neuromorphometrics_dseg.nii.gz"
    atlas = load_atlas("neuromorphometrics").image
    nib.save(resample_img(atlas, target, target_shape=(62, 74, 62), interpolation="nearest"), paths["atlas"])
    paths["t1w_in_template"] = folder / "sub-01_space-MNI152NLin2009aSym_T1w.nii.gz"
    warped = resample_img(template.t1w, target_affine=np.diag([3.0, 3.0, 3.0]), interpolation="continuous")
    nib.save(warped, paths["t1w_in_template"])
    return paths


@pytest.fixture(scope="module")
def regional() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "index": [30, 4, 23],
            "name": ["Left_Accumbens_Area", "3rd_Ventricle", "Right_Accumbens_Area"],
            "tissue": ["gm", "csf", "gm"],
            "gm_volume_mm3": [512.25, 12.5, 498.75],
        }
    )


@pytest.fixture(scope="module")
def report(images: dict[str, Path], regional: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out") / "sub-01.html"
    return write_participant_report(
        out,
        subject="01",
        session=None,
        t1w=images["t1w"],
        mask=images["mask"],
        dseg=images["dseg"],
        t1w_in_template=images["t1w_in_template"],
        regional=regional,
        tissue=TISSUE,
        qc={**PLAUSIBLE_QC, "qc_flag": False},
        atlas="neuromorphometrics",
        atlas_dseg=images["atlas"],
    )


def _write_text_only(out: Path, qc: dict, t1w: Path, regional: pd.DataFrame) -> Path:
    """A report without figures (no images given), fast enough for many small checks."""
    inputs = SessionInputs(None, t1w, None, None, None, regional, TISSUE, qc)
    return write_subject_report(
        out, subject="01", sessions=[inputs], atlas="aal", software={"ketabids": "9.9"}
    )


def test_report_is_valid_html_with_every_section(report: Path) -> None:
    html = parse(report)
    assert not html.errors
    assert not html.stack
    expected = {"summary", "session", "session-mask", "session-segmentation", "session-atlas"}
    expected |= {"session-registration"}
    assert expected | {"session-volumes", "session-qc", "software", "methods"} <= html.ids
    text = report.read_text()
    assert "sub-01" in text and "neuromorphometrics" in text and "sub-01_t1w.nii.gz" in text
    assert "QC passed" in text


def test_embedded_images_are_pngs(report: Path) -> None:
    sources = parse(report).images
    assert len(sources) == 4  # mask, segmentation, atlas regions, registration
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        png = base64.b64decode(source.split(",", 1)[1])
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 500
        assert pixels[..., :3].std() > 0.05  # not a blank picture


def test_volume_table_holds_the_input_numbers(report: Path, regional: pd.DataFrame) -> None:
    tables = parse(report).tables
    rows = [row for row in tables["numbers regional"] if row and row[0].isdigit()]
    assert [int(row[0]) for row in rows] == sorted(regional["index"])
    for row in rows:
        expected = regional.loc[regional["index"] == int(row[0])].iloc[0]
        assert row[1] == expected["name"]
        assert float(row[3]) == expected["gm_volume_mm3"]
        assert float(row[4]) == pytest.approx(100 * expected["gm_volume_mm3"] / TISSUE["tiv_mm3"], abs=5e-4)
    tissue = {row[0]: float(row[1]) for row in tables["numbers tissue"][1:]}
    assert tissue["Total intracranial volume (TIV)"] == TISSUE["tiv_mm3"]
    assert tissue["Grey matter (GM)"] == TISSUE["gm_volume_mm3"]
    assert f"sum over regions {regional['gm_volume_mm3'].sum():.2f}" in report.read_text()


def test_no_external_resources(report: Path) -> None:
    html = parse(report)
    for link in html.links:
        assert link.startswith(("data:image/png;base64,", "#", "https://doi.org/")), link[:80]
    text = report.read_text()
    urls = re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"'<>]*", text)
    assert urls and all(url.startswith("https://doi.org/") for url in urls), urls
    assert "https://doi.org/10.1038/s41398-026-04085-4" in text
    assert "<script" not in text and "<link" not in text and "url(" not in text


def test_methods_and_software_are_listed(report: Path) -> None:
    text = report.read_text()
    for name in ("ketabids", "antspyx", "nipype", "nilearn", "deepbet", "torch", "scikit-learn"):
        assert f'<span class="package">{name}</span>' in text
    for doi in ("10.1109/TMI.2010.2046908", "10.1007/s12021-011-9109-y", "10.1016/j.media.2007.06.004"):
        assert doi in text  # N4, Atropos, SyN
    assert "MNI152NLin2009aSym" in text and "deepbet" in text


@pytest.mark.parametrize(
    ("qc", "flagged"),
    [
        ({**PLAUSIBLE_QC, "qc_flag": True}, True),
        ({**PLAUSIBLE_QC, "qc_flag": False}, False),
        ({**PLAUSIBLE_QC, "qc_pass": False}, True),
        (PLAUSIBLE_QC, False),
        ({**PLAUSIBLE_QC, "cnr": 0.2}, True),  # no flag set by the pipeline: implausible values decide
        ({**PLAUSIBLE_QC, "qc_flags": "cjv,cnr"}, True),  # a list of flagged metrics
        ({**PLAUSIBLE_QC, "qc_flags": ""}, False),
    ],
)
def test_qc_flag_shows_when_qc_says_so(
    qc: dict, flagged: bool, images: dict[str, Path], regional: pd.DataFrame, tmp_path: Path
) -> None:
    text = _write_text_only(tmp_path / "sub-01.html", qc, t1w=images["t1w"], regional=regional).read_text()
    assert ("QC flag: check this image" in text) is flagged
    assert ("QC passed" in text) is not flagged
    assert ("qc_flags: cjv,cnr" in text) is (qc.get("qc_flags") == "cjv,cnr")  # the reasons are shown
    empty = _write_text_only(tmp_path / "sub-02.html", {}, t1w=images["t1w"], regional=regional).read_text()
    assert "no QC metrics" in empty and "QC passed" not in empty and "QC flag" not in empty


def test_qc_table_explains_and_marks_implausible_values() -> None:
    qc = {"cjv": 1.7, "snr_wm": 30.0, "custom": float("nan"), "qc_flag": 0, "qc_reasons": float("nan")}
    rows = {row["key"]: row for row in qc_table(qc)}
    assert set(rows) == {"cjv", "snr_wm", "custom"}, "the verdict and its reasons are not metrics"
    assert rows["cjv"]["implausible"] and not rows["snr_wm"]["implausible"] and rows["custom"]["implausible"]
    assert "joint variation" in rows["cjv"]["label"] and rows["cjv"]["explanation"]
    assert qc_flag({"cjv": 0.3}) is None
    assert qc_flag({"qc_flag": "true"}) is True and qc_flag({"qc_flag": 0}) is False
    assert qc_flag({"qc_flag": "n/a"}) is False and qc_flag({"qc_flag": float("nan")}) is False


def test_failed_figure_leaves_no_file(
    images: dict[str, Path], regional: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "sub-01.html"
    out.write_text("previous report")

    def broken(*args, **kwargs):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(participant, "contour_mosaic", broken)
    with pytest.raises(RuntimeError, match="plotting failed"):
        write_participant_report(
            out, subject="01", session="pre", t1w=images["t1w"], mask=images["mask"], dseg=None,
            t1w_in_template=None, regional=regional, tissue=TISSUE, qc=PLAUSIBLE_QC, atlas="aal",
        )  # fmt: skip
    assert out.read_text() == "previous report"
    assert [p.name for p in tmp_path.iterdir()] == ["sub-01.html"]
    with pytest.raises(RuntimeError):
        write_participant_report(
            tmp_path / "sub-02.html", subject="02", session=None, t1w=images["t1w"], mask=images["mask"],
            dseg=None, t1w_in_template=None, regional=regional, tissue=TISSUE, qc={}, atlas="aal",
        )  # fmt: skip
    assert not (tmp_path / "sub-02.html").exists()


def test_sessions_share_one_file_and_missing_steps_are_explained(
    images: dict[str, Path], regional: pd.DataFrame, tmp_path: Path
) -> None:
    pre = SessionInputs("pre", images["t1w"], None, None, None, regional, TISSUE, PLAUSIBLE_QC)
    post = SessionInputs(
        "post", images["t1w"], None, None, None, regional.iloc[:0], {}, {}, errors=["N4 failed: <oops>"]
    )
    out = write_subject_report(tmp_path / "sub-01.html", subject="01", sessions=[pre, post], atlas="aal")
    html = parse(out)
    assert not html.errors
    assert {"ses-pre", "ses-post", "ses-post-errors"} <= html.ids
    text = out.read_text()
    assert "N4 failed: &lt;oops&gt;" in text  # escaped
    assert "No brain mask is available" in text and "No regional volumes are available" in text
    with pytest.raises(ValueError, match="no sessions"):
        write_subject_report(tmp_path / "x.html", subject="01", sessions=[], atlas="aal")


def test_unusual_inputs_still_give_a_report(
    images: dict[str, Path], regional: pd.DataFrame, tmp_path: Path
) -> None:
    """An integer 4D (one volume) T1w, a mask on another grid and an empty segmentation."""
    t1w = nib.load(images["t1w"])
    integer_4d = tmp_path / "t1w_4d.nii.gz"
    nib.save(nib.Nifti1Image(t1w.get_fdata()[..., None].astype(np.int16), t1w.affine), integer_4d)
    mask = resample_img(nib.load(images["mask"]), np.diag([4.0, 4.0, 4.0]), interpolation="nearest")
    nib.save(mask, tmp_path / "mask_4mm.nii.gz")
    empty = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(t1w.shape, np.uint8), t1w.affine), empty)
    out = write_participant_report(
        tmp_path / "sub-01.html", subject="01", session=None, t1w=integer_4d, mask=tmp_path / "mask_4mm.nii.gz",
        dseg=empty, t1w_in_template=None, regional=regional, tissue={}, qc={}, atlas="aal",
    )  # fmt: skip
    assert len(parse(out).images) == 2
    with pytest.raises(ValueError, match="gm_volume_mm3"):
        write_participant_report(
            tmp_path / "sub-02.html", subject="02", session=None, t1w=integer_4d, mask=None, dseg=None,
            t1w_in_template=None, regional=regional.drop(columns="gm_volume_mm3"), tissue={}, qc={}, atlas="aal",
        )  # fmt: skip


def test_cut_coords_hit_the_mask_in_any_orientation(images: dict[str, Path]) -> None:
    mask = nib.load(images["mask"])
    inverse = np.linalg.inv(mask.affine)
    coords = cut_coords(mask, n_slices=5)
    centre = nib.affines.apply_affine(mask.affine, np.argwhere(mask.get_fdata() > 0).mean(axis=0))
    data = mask.get_fdata() > 0
    for axis, values in enumerate(coords.values()):
        assert len(values) == 5 and values == sorted(values)
        for value in values:  # the point on this slice through the mask centre is inside the mask
            point = centre.copy()
            point[axis] = value
            voxel = np.rint(nib.affines.apply_affine(inverse, point)).astype(int)
            assert data[tuple(voxel)]


def test_methods_text_numbers_its_references() -> None:
    versions = software_versions()
    assert versions["ketabids"] and versions["python"]
    methods = participant_methods("harvard_oxford", {"ketabids": "1.2.3"})
    assert "ketabids 1.2.3" in methods.text
    cited = sorted({int(n) for group in re.findall(r"\[([\d, ]+)\]", methods.text) for n in group.split(",")})
    assert cited == list(range(1, len(methods.references) + 1))
    assert methods.references[0].doi == "10.1038/s41398-026-04085-4"
    assert any("Desikan" in ref.text for ref in methods.references)


@pytest.mark.skipif(not has_chromium(), reason="headless Chromium is not installed")
def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    png = screenshot(report, tmp_path / "shot.png", width=1000, height=1600)
    pixels = matplotlib.image.imread(png)
    assert pixels.shape[:2] == (1600, 1000)
    assert pixels[..., :3].std() > 0.05


def test_screenshot_explains_a_missing_chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    page = tmp_path / "page.html"
    page.write_text("<html></html>")
    with pytest.raises(RuntimeError, match="Chromium"):
        screenshot(page, tmp_path / "shot.png")


def _decode_png(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    return matplotlib.image.imread(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])), format="png")


def test_group_figure_helpers_draw_pngs(images: dict[str, Path]) -> None:
    labels = nib.load(images["dseg"])
    painted = figures.region_value_image(labels, {1: -2.0, 2: 0.5, 7: 9.0})
    data, dseg = painted.get_fdata(), np.rint(labels.get_fdata())
    assert np.all(data[dseg == 1] == -2.0) and np.all(data[dseg == 2] == 0.5) and np.all(data[dseg == 3] == 0)
    mosaic = figures.stat_mosaic(
        painted, background=images["t1w"], coords=cut_coords(images["mask"], 3), colorbar_label="weight"
    )
    assert _decode_png(mosaic)[..., :3].std() > 0.05
    y, p = np.array([0, 0, 1, 1, 1, 0]), np.array([0.1, 0.4, 0.35, 0.8, 0.9, 0.2])
    for uri in (
        figures.roc_figure({"cv": (y, p), "one class": ([1, 1], [0.2, 0.4])}),
        figures.null_distribution_figure(np.linspace(0.3, 0.7, 50), 0.72, p_value=0.02),
        figures.weight_bars({"Left_A": 0.5, "Right_B": -1.0, "C": 0.01}, top=2),
    ):
        assert _decode_png(uri).shape[0] > 100


def test_report_names_the_brain_extraction_that_ran_and_judges_each_metric(
    images: dict[str, Path], regional: pd.DataFrame, tmp_path: Path
) -> None:
    qc = {**PLAUSIBLE_QC, "registration_correlation": 0.62, "qc_flag": 1,
          "qc_reasons": "registration_correlation 0.62 < 0.7"}  # fmt: skip
    inputs = SessionInputs(
        None, images["t1w"], None, None, None, regional, TISSUE, qc, brain_extraction="deepbet"
    )
    text = write_subject_report(
        tmp_path / "sub-01.html", subject="01", sessions=[inputs], atlas="aal"
    ).read_text()
    assert "<th>Brain extraction</th><td>deepbet</td>" in text and "extracted with deepbet" in text
    assert "registration_correlation 0.62 &lt; 0.7" in text  # the reason, next to the verdict
    rows = {row["key"]: row for row in qc_table(qc)}
    assert (
        rows["registration_correlation"]["range"] == "0.7 - 1"
        and rows["registration_correlation"]["implausible"]
    )
    assert re.search(r"<code>registration_correlation</code>.*?0\.7 - 1</td>\s*<td>flag</td>", text, re.S)
    assert re.search(r"<code>cnr</code>.*?<td>pass</td>", text, re.S)


def test_methods_name_the_brain_extraction_that_ran() -> None:
    deepbet = participant_methods("aal", {"deepbet": "1.0.2"}).text
    assert "extracted with deepbet 1.0.2" in deepbet
    with pytest.raises(ValueError, match="template"):  # the fallback removed in issue 7
        participant_methods("aal", {}, brain_extraction=("template",))
