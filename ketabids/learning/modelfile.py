"""Model files shared between sites: ``model.skops`` (never a pickle) and its card ``model.json``.

Loading checks the card's sha256 against the file, refuses pickles and any object type outside
an explicit allowlist, and only then lets skops build the objects.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import skops.io as sio

from ketabids.derivatives import atomic_write, write_text_atomic
from ketabids.errors import BadDataError, InputMissingError
from ketabids.learning.model import CalibratedModel

# Every type a ketabids model file may contain; anything else is refused before loading.
ALLOWED_TYPES = frozenset(
    {
        "builtins.dict",
        "builtins.list",
        "builtins.str",
        "builtins.tuple",
        "builtins.int",
        "builtins.float",
        "builtins.bool",
        "numpy.ndarray",
        "numpy.float64",
        "numpy.int64",
        "ketabids.learning.model.CalibratedModel",
        "ketabids.learning.model.CovariateResidualizer",
        "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.svm._classes.SVC",
        "sklearn.linear_model._logistic.LogisticRegression",
    }
)
_PICKLE_MAGIC = (b"\x80", b"(", b"c", b"]", b"}")


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def card_path(model_path: Path) -> Path:
    """``model.json`` next to ``model.skops`` (same stem)."""
    return Path(model_path).with_suffix(".json")


def save_model(model: CalibratedModel, path: Path, card: dict) -> dict:
    """Write the model with skops and its card (with the file's sha256), both atomically."""
    path = Path(path)
    with atomic_write(path) as tmp:
        sio.dump(model, tmp)
    card = {**card, "model_file": path.name, "sha256": sha256(path), "format": "skops"}
    write_text_atomic(json.dumps(card, indent=2, default=str) + "\n", card_path(path))
    return card


def _object_types(path: Path) -> set[str]:
    """Every ``module.Class`` named in the skops schema of the file."""
    with zipfile.ZipFile(path) as archive:
        schema = json.loads(archive.read("schema.json"))
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "__module__" in node and "__class__" in node:
                found.add(f"{node['__module__']}.{node['__class__']}")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return found


def load_model(path: Path) -> tuple[CalibratedModel, dict]:
    """Load a model file after checking its card, its hash, its format and the types it contains."""
    path = Path(path)
    if not path.is_file():
        raise InputMissingError(f"model file {path} does not exist")
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not head.startswith(b"PK"):
        kind = "a pickle" if head[:1] in _PICKLE_MAGIC else "not a skops archive"
        raise BadDataError(f"{path} is {kind}; only skops model files written by ketabids are accepted")
    card_file = card_path(path)
    if not card_file.is_file():
        raise InputMissingError(f"model card {card_file} (with the model's sha256) is missing")
    try:
        card = json.loads(card_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadDataError(f"cannot read model card {card_file}: {err}") from err
    if not isinstance(card, dict):
        raise BadDataError(f"model card {card_file} is JSON but not an object ({type(card).__name__})")
    if card.get("sha256") != sha256(path):
        raise BadDataError(f"{path} does not match the sha256 in {card_file}: the file was changed")
    try:
        untrusted = set(sio.get_untrusted_types(file=path))
        named = _object_types(path)
    except (zipfile.BadZipFile, KeyError, ValueError, json.JSONDecodeError) as err:
        raise BadDataError(f"{path} is not a valid skops file: {err}") from err
    refused = sorted((untrusted | named) - ALLOWED_TYPES)
    if refused:
        raise BadDataError(f"{path} contains types outside the allowlist: {', '.join(refused)}")
    try:
        model = sio.load(path, trusted=sorted(untrusted))
    except Exception as err:  # skops raises many kinds of errors for malformed files
        raise BadDataError(f"cannot load {path}: {err}") from err
    if not isinstance(model, CalibratedModel):
        raise BadDataError(f"{path} holds a {type(model).__name__}, not a ketabids model")
    return model, card
