"""Reproducible transform files: ITK's HDF5 transforms rewritten without object time stamps.

HDF5 records a creation/modification time in the header of every group and dataset unless told not
to, and ITK's transform writer does not turn that off: two identical registrations give files that
differ in those stamps only. :func:`drop_time_stamps` rewrites such a file with h5py, object by
object, with time tracking off; everything ITK reads (group layout, dataset types, shapes, storage
layout, chunking, compression, data and attributes) is carried over unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
from h5py import h5f, h5g, h5p

from ketabids.derivatives import atomic_write


def drop_time_stamps(path: str | os.PathLike) -> Path:
    """Rewrite the HDF5 file ``path`` in place (atomically) with no object time stamps."""
    path = Path(path)
    with atomic_write(path) as tmp, h5py.File(path, "r") as source, _create_untimed(tmp) as target:
        _copy_group(source, target)  # both files are closed before the rename
    return path


def _create_untimed(path: Path) -> h5py.File:
    """A new HDF5 file whose root group has no time stamps, in the file format ITK writes (HDF5 1.8
    object headers and superblock, readable by ITK's HDF5 1.12)."""
    fcpl = h5p.create(h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)
    fapl = h5p.create(h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5f.LIBVER_V18, h5f.LIBVER_V112)
    return h5py.File(h5f.create(os.fsencode(path), h5f.ACC_TRUNC, fapl=fapl, fcpl=fcpl))


def _copy_group(source: h5py.Group, target: h5py.Group) -> None:
    _copy_attributes(source, target)
    for name in source:
        link = source.get(name, getlink=True)
        if not isinstance(link, h5py.HardLink):
            where = f"{source.name.rstrip('/')}/{name}"
            raise ValueError(f"{source.file.filename}: {where} is a {type(link).__name__}, not copied")
        item = source[name]
        if isinstance(item, h5py.Group):
            gcpl = h5p.create(h5p.GROUP_CREATE)
            gcpl.set_obj_track_times(False)
            _copy_group(item, h5py.Group(h5g.create(target.id, name.encode(), gcpl=gcpl)))
        elif isinstance(item, h5py.Dataset):
            _copy_dataset(item, target, name)
        else:
            raise ValueError(f"{source.file.filename}: {item.name} is a committed datatype")


def _copy_dataset(source: h5py.Dataset, target: h5py.Group, name: str) -> None:
    """Copy with the source's creation properties (layout, chunks, filters, fill), times off."""
    dcpl = source.id.get_create_plist()
    dcpl.set_obj_track_times(False)
    copy = target.create_dataset(name, shape=source.shape, dtype=source.id.get_type(), dcpl=dcpl)
    copy[()] = source[()]
    _copy_attributes(source, copy)


def _copy_attributes(source: h5py.HLObject, target: h5py.HLObject) -> None:
    for key in source.attrs:
        target.attrs.create(key, source.attrs[key], dtype=source.attrs.get_id(key).dtype)
