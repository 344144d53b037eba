"""File > Save Layers for the tracks layer: CSV or NPZ, read back losslessly by our reader.

Everything needed to rebuild the layer travels with the file: the ``(track_id, t, y, x)``
vertices, every feature column with its type (identity, tracklet, end reason, confidence,
edited, ...) and the layer metadata, which holds the corrections (``manual_matches``,
``manual_splits``) and where the results folder is. Saving goes to a temporary file that is
renamed into place, so a failed save leaves the previous file intact.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..core.io import atomic_path

FORMAT = 1
CSV_MAGIC = "# napari-trex tracks"
LAYER_KEYS = ("name", "tail_length", "tail_width", "head_length", "color_by", "blending", "opacity")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple | set):
        return list(value)
    return str(value)


def _header(meta: dict[str, Any], kinds: dict[str, str]) -> str:
    layer = {k: meta[k] for k in LAYER_KEYS if k in meta}
    return json.dumps({"format": FORMAT, "layer": layer, "metadata": meta.get("metadata", {}),
                       "feature_kinds": kinds}, default=_json_default)


def _features(meta: dict[str, Any], n: int) -> dict[str, np.ndarray]:
    features = meta.get("features")
    if features is None or len(getattr(features, "columns", [])) == 0:
        return {}
    return {str(c): np.asarray(features[c]) for c in features.columns if len(features[c]) == n}


def _kind(values: np.ndarray) -> str:
    return {"b": "bool", "i": "int", "u": "int", "f": "float"}.get(values.dtype.kind, "str")


def write_tracks(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 writer for one Tracks layer: ``.npz`` or ``.csv`` by the extension."""
    target = Path(path)
    data = np.asarray(data, float)
    features = _features(meta, len(data))
    kinds = {name: _kind(values) for name, values in features.items()}
    suffix = target.suffix.lower()
    if suffix not in (".npz", ".csv"):
        target = target.with_suffix(".npz")
        suffix = ".npz"
    with atomic_path(target) as tmp:
        if suffix == ".npz":
            arrays = {"napari_trex_tracks": np.array(FORMAT), "data": data,
                      "header": np.array(_header(meta, kinds))}
            for name, values in features.items():
                arrays[f"feature/{name}"] = values.astype(str) if kinds[name] == "str" else values
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as fh:
                fh.write(f"{CSV_MAGIC} {_header(meta, kinds)}\n")
                writer = csv.writer(fh)
                writer.writerow(["track_id", "t", "y", "x", *features])
                columns = [data[:, k] for k in range(data.shape[1])] + list(features.values())
                for row in zip(*columns):
                    writer.writerow([repr(float(v)) if isinstance(v, float | np.floating) else v
                                     for v in row])
    return [str(target)]


# -- reading back ------------------------------------------------------------------------------------

def is_tracks_file(path: Path) -> bool:
    """Whether ``path`` is a tracks file written by :func:`write_tracks`."""
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return "napari_trex_tracks" in z.files
        if path.suffix.lower() == ".csv":
            with open(path, encoding="utf-8") as fh:
                return fh.readline().startswith(CSV_MAGIC)
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return False


def _typed(values: list[str] | np.ndarray, kind: str) -> np.ndarray:
    if kind == "bool":
        return np.array([v in (True, "True", "true", "1") for v in values], bool)
    if kind == "int":
        return np.asarray(values).astype(np.int64)
    if kind == "float":
        return np.asarray(values).astype(float)
    return np.asarray(values, dtype=str).astype(object)


def read_tracks(path: str | Path) -> list[tuple[Any, dict[str, Any], str]]:
    """The Tracks layer saved in ``path``: same vertices, features, metadata and style."""
    from ..core.errors import NapariTrexError

    path = Path(path)
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(str(z["header"]))
                data = z["data"]
                features = {name: _typed(z[f"feature/{name}"], kind)
                            for name, kind in header["feature_kinds"].items()}
        else:
            text = path.read_text(encoding="utf-8")
            first, _, body = text.partition("\n")
            header = json.loads(first[len(CSV_MAGIC):])
            rows = list(csv.reader(io.StringIO(body)))
            names, rows = rows[0], rows[1:]
            columns = list(zip(*rows)) if rows else [[] for _ in names]
            data = np.array([list(map(float, c)) for c in columns[:4]], float).T.reshape(-1, 4)
            features = {name: _typed(list(columns[4 + k]), header["feature_kinds"][name])
                        for k, name in enumerate(names[4:])}
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise NapariTrexError(f"{path.name} is not a readable napari-trex tracks file: {exc}") from None
    meta = dict(header["layer"])
    meta["metadata"] = restore_metadata(header["metadata"])
    meta["features"] = features
    n = meta["metadata"].get("n_individuals")
    if "identity_colour" in features and n:
        from .layers import identity_colormap

        meta["colormaps_dict"] = {"identity_colour": identity_colormap(int(n))}
    return [(data, meta, "tracks")]


def restore_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """JSON turned the frame and identity keys of the corrections into strings: turn them back."""
    out = dict(metadata)
    if "manual_matches" in out:
        out["manual_matches"] = {int(f): {int(i): int(b) for i, b in m.items()}
                                 for f, m in out["manual_matches"].items()}
    if "manual_splits" in out:
        out["manual_splits"] = {int(f): [int(b) for b in blobs] for f, blobs in out["manual_splits"].items()}
    return out
