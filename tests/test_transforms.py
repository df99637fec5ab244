"""HDF5 transforms without time stamps, on composite transforms written by antsRegistration."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from h5py import h5o

from ketabids.processing.registration import linear_args, syn_args
from ketabids.processing.transforms import drop_time_stamps

# Two seeded registrations, a second apart (HDF5 time stamps count seconds), in one fresh process
# with one ITK thread, so that both find the same transform.
REGISTER_TWICE = """
import json, sys, time
from ants.internal import get_lib_fn
for i, calls in enumerate(json.loads(sys.argv[1])):
    time.sleep(1.1 * i)
    for args in calls:  # affine, then SyN from it
        assert get_lib_fn("antsRegistration")(args) == 0
"""


def _blob(path: Path, centre: tuple[float, ...], radii: tuple[float, ...], mask: bool = False) -> Path:
    """A smooth ellipsoid (or its mask) on a 4 mm grid of 20^3 voxels."""
    grid = np.stack(np.meshgrid(*[np.arange(20.0)] * 3, indexing="ij"), axis=-1)
    distance = np.sqrt((((grid - centre) / radii) ** 2).sum(axis=-1))
    data = (
        (distance < 1.3) if mask else np.clip(1.5 - distance, 0, 1) * (1 + 0.5 * (grid[..., 0] > centre[0]))
    )
    nib.Nifti1Image(data.astype(np.float32), np.diag([4.0, 4.0, 4.0, 1.0])).to_filename(path)
    return path


@pytest.fixture(scope="module")
def registrations(tmp_path_factory) -> tuple[Path, Path, Path, Path]:
    """fixed and moving images, and the folders of two identical affine + SyN registrations."""
    root = tmp_path_factory.mktemp("transforms")
    fixed = _blob(root / "fixed.nii.gz", (10, 10, 10), (6, 5, 4))
    moving = _blob(root / "moving.nii.gz", (9, 11, 10), (6.6, 4.6, 4.2))
    mask = _blob(root / "mask.nii.gz", (10, 10, 10), (6, 5, 4), mask=True)
    runs = [root / "first", root / "second"]
    args = []
    for run in runs:
        run.mkdir()
        prefix = str(run / "reg_")
        linear = linear_args(fixed, moving, mask, prefix + "affine_", seed=0, spacing=4.0)
        syn = syn_args(
            fixed, moving, mask, Path(prefix + "affine_0GenericAffine.mat"), prefix, syn_iterations="20x10"
        )
        args.append([[str(a) for a in linear], [str(a) for a in syn]])
    env = {**os.environ, "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1"}
    subprocess.run([sys.executable, "-c", REGISTER_TWICE, json.dumps(args)], check=True, env=env)
    return fixed, moving, runs[0], runs[1]


def _times(path: Path) -> set[tuple[int, int]]:
    """(creation, modification) times of the root group and every object below it."""
    with h5py.File(path, "r") as f:
        objects = [f]
        f.visititems(lambda _, obj: objects.append(obj))
        return {(info.ctime, info.mtime) for info in (h5o.get_info(obj.id) for obj in objects)}


def _layout(path: Path) -> dict[str, tuple]:
    """Every group and dataset with what ITK reads of it: type, shape, storage, filters, values."""
    with h5py.File(path, "r") as f:
        layout = {}

        def visit(name: str, obj: h5py.HLObject) -> None:
            attrs = {key: np.asarray(value).tolist() for key, value in obj.attrs.items()}
            if isinstance(obj, h5py.Group):
                layout[name] = ("group", attrs)
            else:
                storage = (obj.chunks, obj.compression, obj.compression_opts, obj.shuffle, obj.fletcher32)
                string = h5py.check_string_dtype(obj.dtype)
                layout[name] = (obj.dtype.str, string, obj.shape, storage, obj[()].tolist(), attrs)

        f.visititems(visit)
        return layout


@pytest.mark.parametrize("name", ["reg_Composite.h5", "reg_InverseComposite.h5"])
def test_transforms_written_at_different_times_become_identical(registrations, tmp_path, name):
    _, _, first, second = registrations
    a, b = shutil.copy(first / name, tmp_path / "a.h5"), shutil.copy(second / name, tmp_path / "b.h5")
    assert Path(a).read_bytes() != Path(b).read_bytes()  # ITK's files carry their writing time
    assert _layout(a) == _layout(b) and _times(a) != _times(b)
    drop_time_stamps(a), drop_time_stamps(b)
    assert Path(a).read_bytes() == Path(b).read_bytes()
    assert _times(a) == {(0, 0)}
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_rewritten_transform_keeps_layout_and_warps_the_same(registrations, tmp_path):
    import ants

    fixed_path, moving_path, first, _ = registrations
    fixed, moving = ants.image_read(str(fixed_path)), ants.image_read(str(moving_path))
    for name, reference, image in (
        ("reg_Composite.h5", fixed, moving),
        ("reg_InverseComposite.h5", moving, fixed),
    ):
        original = first / name
        rewritten = Path(shutil.copy(original, tmp_path / name))
        drop_time_stamps(rewritten)
        assert _layout(rewritten) == _layout(original)
        assert ants.read_transform(str(rewritten)).type == "CompositeTransform"
        warped = ants.apply_transforms(reference, image, [str(rewritten)]).numpy()
        assert np.array_equal(warped, ants.apply_transforms(reference, image, [str(original)]).numpy())
        unregistered = ants.resample_image_to_target(image, reference).numpy()
        target = reference.numpy()
        assert np.abs(warped - target).mean() < 0.5 * np.abs(unregistered - target).mean()


def test_a_file_it_cannot_copy_faithfully_is_refused_and_left_as_it_was(tmp_path):
    path = tmp_path / "linked.h5"
    with h5py.File(path, "w") as f:
        f["TransformGroup/0/TransformType"] = np.array([b"AffineTransform_double_3_3"], dtype=object)
        f["alias"] = h5py.SoftLink("/TransformGroup")
    before = path.read_bytes()
    with pytest.raises(ValueError, match="alias is a SoftLink"):
        drop_time_stamps(path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["linked.h5"]
