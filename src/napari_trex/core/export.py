"""Trajectories for analysis, in TRex's export format (trex-reference §6).

One file per individual, ``<output_dir>/data/<video>_id<k>.npz`` and ``.csv``, one row per frame
from the individual's first to its last frame: ``frame``, ``time`` (s), ``X``, ``Y`` (cm, origin
top-left, px · ``cm_per_pixel``), ``ANGLE`` (rad from +x, the heading), ``VX``, ``VY``,
``SPEED`` (cm/s, from the previous frame), ``missing`` (1 where the animal was not seen; its
values are ``inf`` as in TRex), ``tracklet_id`` (-1 where missing), ``identity_confidence``,
``edited`` and ``identity_source`` (network, manual, elimination, inferred; "interpolated"
where the animal was hidden in a blob of several: X/Y interpolated, ANGLE inf, tracklet_id -1;
"tracking" before identification); NPZ files add ``frame_segments`` (K×2 first/last frame of each tracklet) and
what the cm rest on (``cm_per_pixel``, ``cm_per_pixel_assumed``, ``meta_real_width``).
CSV headers carry units (``X (cm)``). Plus one combined ``<video>_trajectories.csv`` and,
when asked, the validation samples npz. Tracklets the user removed (not animals) are left out.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .corrections import REMOVED, slot_identities
from .io import as_created_folder, atomic_path
from .results import heading_angles

FIELDS = ("frame", "time", "X", "Y", "ANGLE", "VX", "VY", "SPEED", "missing", "tracklet_id",
          "identity_confidence", "edited", "identity_source")
UNITS = {"time": "s", "X": "cm", "Y": "cm", "ANGLE": "rad", "VX": "cm/s", "VY": "cm/s",
         "SPEED": "cm/s"}
INVALID = np.inf  # TRex's value for "no data" (output_invalid_value = inf)


def individual_tables(run: Any, identities: Any = None, edited: np.ndarray | None = None
                      ) -> dict[int, dict[str, np.ndarray]]:
    """``{identity: {field: column}}`` for every individual with at least one frame."""
    result = run.result
    hidden = None
    if identities is not None:  # identified: animals hidden in a blob of several get a place
        from .identification.assignment import hidden_positions
        from .results import max_speed_px

        hidden = hidden_positions(result, identities, run.n_individuals, run.fps, max_speed_px(run))
    identities = identities if identities is not None else slot_identities(result)
    edited = np.zeros(len(result.tracklets), bool) if edited is None else np.asarray(edited, bool)
    cm = run.settings.pixel_size_cm(run.video_info.width)
    det = result.detections
    heading = heading_angles(result)
    frames, slots = np.nonzero((result.assignment >= 0) & (result.tracklet_of >= 0))
    tid = result.tracklet_of[frames, slots]
    ident = identities.identity[tid]
    keep = (ident >= 0) & (identities.source[tid] != REMOVED)
    frames, slots, tid, ident = frames[keep], slots[keep], tid[keep], ident[keep]
    rows = result.assignment[frames, slots]
    tables = {}
    for k in np.unique(ident):
        mine = ident == k
        f = frames[mine]
        order = np.argsort(f, kind="stable")
        f, r, t = f[order], rows[mine][order], tid[mine][order]
        f, first = np.unique(f, return_index=True)  # one row per frame (never two tracklets)
        r, t = r[first], t[first]
        span = np.arange(f[0], f[-1] + 1)
        at = f - f[0]
        table = {name: np.full(len(span), INVALID) for name in ("X", "Y", "ANGLE", "VX", "VY", "SPEED")}
        table["frame"] = span
        table["time"] = run.times[span]
        table["missing"] = np.ones(len(span), np.int8)
        table["tracklet_id"] = np.full(len(span), -1, np.int64)
        table["identity_confidence"] = np.zeros(len(span))
        table["edited"] = np.zeros(len(span), np.int8)
        table["X"][at] = det["x"][r] * cm
        table["Y"][at] = det["y"][r] * cm
        table["ANGLE"][at] = heading[r]
        table["missing"][at] = 0
        table["tracklet_id"][at] = t
        table["identity_confidence"][at] = identities.probability[t]
        table["edited"][at] = edited[t]
        table["identity_source"] = np.full(len(span), "", dtype="<U12")
        table["identity_source"][at] = [str(v) or "tracking" for v in identities.source[t]]
        if hidden is not None:
            mine = (hidden["identity"] == k) & (hidden["frame"] >= f[0]) & (hidden["frame"] <= f[-1])
            there = hidden["frame"][mine] - f[0]
            table["X"][there] = hidden["x"][mine] * cm
            table["Y"][there] = hidden["y"][mine] * cm
            table["missing"][there] = 0
            table["identity_source"][there] = "interpolated"
        _velocities(table)
        pieces = np.unique(t)
        table["frame_segments"] = np.array([[run.result.tracklets.start[p], run.result.tracklets.end[p]]
                                            for p in pieces], np.int64).reshape(-1, 2)
        tables[int(k)] = table
    return tables


def _velocities(table: dict[str, np.ndarray]) -> None:
    """VX, VY, SPEED on every frame the animal was seen: from the previous frame it was seen
    in (across a gap: the mean velocity over the gap), on its first frame towards the next one;
    0 for an animal seen in one frame only. Never ``inf`` where X and Y are numbers, so means
    and sums over seen frames work."""
    seen = np.flatnonzero(table["missing"] == 0)
    if len(seen) < 2:
        for name in ("VX", "VY", "SPEED"):
            table[name][seen] = 0.0
        return
    before = np.concatenate([[seen[1]], seen[1:]])  # the first frame looks forward
    after = np.concatenate([[seen[0]], seen[:-1]])
    a, b = np.minimum(before, after), np.maximum(before, after)
    dt = table["time"][b] - table["time"][a]
    dt = np.where(dt > 0, dt, np.nan)
    table["VX"][seen] = (table["X"][b] - table["X"][a]) / dt
    table["VY"][seen] = (table["Y"][b] - table["Y"][a]) / dt
    table["SPEED"][seen] = np.hypot(table["VX"][seen], table["VY"][seen])


def _csv(path: Path, table: dict[str, np.ndarray], names: tuple[str, ...] | list[str] = FIELDS,
         order: np.ndarray | None = None) -> None:
    """``names`` as CSV columns, headed ``name (unit)``, rows in ``order`` (atomic)."""
    header = ",".join(f"{n} ({UNITS[n]})" if n in UNITS else n for n in names)
    rows = range(len(table[names[0]])) if order is None else order
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(header + "\n")
        for i in rows:
            fh.write(",".join(_fmt(table[n][i]) for n in names) + "\n")


def _fmt(v: Any) -> str:
    if isinstance(v, float | np.floating):
        return "inf" if np.isinf(v) else f"{v:.4f}"
    return str(v)


def _npz(path: Path, table: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **table)


def export_trajectories(run: Any, output_dir: str | os.PathLike, identities: Any = None,
                        edited: np.ndarray | None = None, formats: tuple[str, ...] = ("npz", "csv"),
                        validation_samples: str | os.PathLike | None = None) -> list[Path]:
    """Write the per-individual files and the combined table into ``output_dir/data``,
    replacing what an earlier export left there (all at once: the new files are written into a
    hidden folder that then takes the place of ``data``)."""
    from .results import STAGING_PREFIX, recover

    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    recover(folder)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}data-", dir=folder))
    try:
        names = _write_export(run, staging, identities, edited, formats, validation_samples)
        data = folder / "data"
        old = folder / f"{staging.name}-old"
        if data.exists():
            os.replace(data, old)  # the next line puts the new set in place
        os.replace(staging, data)
        as_created_folder(data)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [data / name for name in names]


def _write_export(run: Any, data: Path, identities: Any, edited: np.ndarray | None,
                  formats: tuple[str, ...], validation_samples: str | os.PathLike | None) -> list[str]:
    video = Path(run.video_info.path).stem
    tables = individual_tables(run, identities, edited)
    # what the cm rest on: calibrated, or TRex's assumption that the frame is meta_real_width wide
    units = {"cm_per_pixel": np.float64(run.settings.pixel_size_cm(run.video_info.width)),
             "cm_per_pixel_assumed": np.bool_(run.settings.cm_per_pixel == 0),
             "meta_real_width": np.float64(run.settings.meta_real_width)}
    written = []
    combined: list[dict[str, np.ndarray]] = []
    for k, table in tables.items():
        for fmt in formats:
            path = data / f"{video}_id{k}.{fmt}"
            if fmt == "npz":
                _npz(path, {**table, **units})
            else:
                _csv(path, table)
            written.append(path.name)
        seen = table["missing"] == 0
        combined.append({"identity": np.full(int(seen.sum()), k),
                         **{n: table[n][seen] for n in FIELDS if n != "missing"}})
    if combined:
        order_cols = ["frame", "identity", *[n for n in FIELDS if n not in ("frame", "missing")]]
        merged = {n: np.concatenate([c[n] for c in combined]) for n in order_cols}
        order = np.lexsort((merged["identity"], merged["frame"]))
        path = data / f"{video}_trajectories.csv"
        _csv(path, merged, order_cols, order)
        written.append(path.name)
    if validation_samples is not None and Path(validation_samples).is_file():
        target = data / Path(validation_samples).name
        with atomic_path(target) as tmp:
            shutil.copyfile(validation_samples, tmp)
        written.append(target.name)
    return written


def cm_per_pixel_from_line(start: tuple[float, float], end: tuple[float, float], length_cm: float) -> float:
    """Calibration: a line drawn over something of known length (cm) → ``cm_per_pixel``."""
    from .errors import SettingsError

    pixels = float(np.hypot(end[0] - start[0], end[1] - start[1]))
    if pixels <= 0:
        raise SettingsError("the calibration line has no length: draw it from one end of the "
                            "object to the other")
    if not length_cm > 0:
        raise SettingsError(f"the real length must be positive, got {length_cm}")
    return length_cm / pixels
