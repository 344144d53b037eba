"""The output folder: CSV tables for people, NPZ state for the next steps, written atomically.

Files (all ours; anything else in the folder is left alone):

* ``trajectories.csv`` — one row per animal and frame where it was seen:
  ``frame,time,identity,x,y,angle,area,tracklet,split`` (x, y px; angle in radians, the
  heading: moment orientation with head/tail resolved by the motion over the tracklet);
* ``tracklets.csv`` — ``tracklet,identity,start,end,length,end_reason,end_code``;
* ``global_segments.csv`` — ``start,end,length,min_cells,average_samples,rank``;
* ``settings.toml`` — the settings actually used (automatic values filled in);
* ``detections.npz``, ``tracking.npz``, ``run.json`` — the state later steps resume from.

Everything is written into a staging folder inside the output folder first and then
renamed into place; ``run.json`` goes last, so a folder with a ``run.json`` always holds one
complete run.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .. import __version__
from .detection import Detections
from .errors import NapariTrexError
from .pipeline import AutoParameters, TrackingRun
from .settings import Settings
from .tracking import TrackingResult
from .tracklets import GlobalSegments, Tracklets, reason_names
from .video import VideoInfo

OUTPUT_FILES = ("trajectories.csv", "tracklets.csv", "global_segments.csv", "settings.toml",
                "detections.npz", "tracking.npz", "run.json")


def heading_angles(result: TrackingResult) -> np.ndarray:
    """Per detection row: the moment orientation turned into a heading (head direction).

    Orientation from moments is only defined modulo 180°. Within each tracklet the angle is
    first made continuous (each frame flipped to within 90° of the previous one), then the
    whole tracklet is flipped if that points against its direction of motion.
    """
    det = result.detections
    heading = det["angle"].astype(float).copy()
    for tid, slot, a, b in zip(result.tracklets.id, result.tracklets.individual,
                               result.tracklets.start, result.tracklets.end):
        rows = result.assignment[a: b + 1, slot]
        rows = rows[rows >= 0]
        if not len(rows):
            continue
        angles = heading[rows]
        for k in range(1, len(angles)):
            if np.cos(angles[k] - angles[k - 1]) < 0:
                angles[k] += np.pi
        if len(rows) > 1:
            vx = np.gradient(det["x"][rows].astype(float))
            vy = np.gradient(det["y"][rows].astype(float))
            moving = np.hypot(vx, vy) > 0.5
            if moving.any():
                agreement = np.cos(angles[moving] - np.arctan2(vy[moving], vx[moving])).sum()
                if agreement < 0:
                    angles += np.pi
        heading[rows] = (angles + np.pi) % (2 * np.pi) - np.pi
    return heading


def trajectory_table(run: TrackingRun) -> dict[str, np.ndarray]:
    """Columns of ``trajectories.csv`` (frame-major, then identity)."""
    result = run.result
    frames, slots = np.nonzero(result.assignment >= 0)
    rows = result.assignment[frames, slots]
    det = result.detections
    heading = heading_angles(result)
    return {
        "frame": frames, "time": run.times[frames], "identity": slots,
        "x": det["x"][rows], "y": det["y"][rows], "angle": heading[rows], "area": det["area"][rows],
        "tracklet": result.tracklet_of[frames, slots], "split": det["split"][rows].astype(int),
    }


def _write_csv(path: Path, columns: dict[str, np.ndarray], formats: dict[str, str]) -> None:
    names = list(columns)
    n = len(next(iter(columns.values()))) if columns else 0
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(",".join(names) + "\n")
        if n:
            fmt = ",".join(formats.get(c, "%d") for c in names)
            table = np.empty(n, dtype=[(c, columns[c].dtype if columns[c].dtype != bool else np.int64)
                                       for c in names])
            for c in names:
                table[c] = columns[c]
            np.savetxt(fh, table, fmt=fmt, delimiter=",")


def save_tracking(run: TrackingRun, output_dir: Path) -> list[Path]:
    """Write a run into ``output_dir``, replacing a previous run there, never half-written."""
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".napari-trex-", dir=output_dir))
    try:
        traj = trajectory_table(run)
        _write_csv(staging / "trajectories.csv", traj,
                   {"time": "%.5f", "x": "%.3f", "y": "%.3f", "angle": "%.5f", "area": "%d"})
        t = run.result.tracklets
        with open(staging / "tracklets.csv", "w", encoding="utf-8") as fh:
            fh.write("tracklet,identity,start,end,length,end_reason,end_code\n")
            for tid, ind, a, b, code in zip(t.id, t.individual, t.start, t.end, t.end_reason):
                fh.write(f"{tid},{ind},{a},{b},{b - a + 1},{reason_names(int(code))},{code}\n")
        g = run.segments
        _write_csv(staging / "global_segments.csv",
                   {"start": g.start, "end": g.end, "length": g.end - g.start + 1,
                    "min_cells": g.min_cells, "average_samples": g.average_samples, "rank": g.rank},
                   {"average_samples": "%.1f"})
        run.settings.save(staging / "settings.toml")
        run.detections.save(staging / "detections.npz")
        r = run.result
        np.savez_compressed(
            staging / "tracking.npz", assignment=r.assignment, tracklet_of=r.tracklet_of,
            probability=r.probability, tracklet_id=t.id, tracklet_individual=t.individual,
            tracklet_start=t.start, tracklet_end=t.end, tracklet_end_reason=t.end_reason,
            background=run.background.astype(np.float32), times=run.times,
            segment_start=g.start, segment_end=g.end, segment_min_cells=g.min_cells,
            segment_average_samples=g.average_samples, segment_rank=g.rank)
        r.detections.save(staging / "tracked_detections.npz")
        meta = {
            "napari_trex_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "video": run.video_info.as_dict(), "fps": run.fps, "n_individuals": run.n_individuals,
            "auto": asdict(run.auto), "timings_s": run.timings,
        }
        (staging / "run.json").write_text(json.dumps(meta, indent=2, default=float), encoding="utf-8")
        # swap in: drop the old marker first, so a crash in between never looks complete
        marker = output_dir / "run.json"
        if marker.exists():
            marker.unlink()
        written = []
        for name in (*OUTPUT_FILES[:-1], "tracked_detections.npz", "run.json"):
            os.replace(staging / name, output_dir / name)
            written.append(output_dir / name)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_tracking(output_dir: str | os.PathLike) -> TrackingRun:
    """Read back a run saved by :func:`save_tracking` (to resume without re-detecting)."""
    folder = Path(output_dir)
    marker = folder / "run.json"
    if not marker.is_file():
        raise NapariTrexError(f"{folder} holds no complete tracking run (no run.json)")
    meta = json.loads(marker.read_text(encoding="utf-8"))
    settings = Settings.load(folder / "settings.toml")
    with np.load(folder / "tracking.npz") as z:
        tracklets = Tracklets(z["tracklet_id"], z["tracklet_individual"], z["tracklet_start"],
                              z["tracklet_end"], z["tracklet_end_reason"])
        tracked = Detections.load(folder / "tracked_detections.npz")
        result = TrackingResult(tracked, z["assignment"], tracklets, z["tracklet_of"], z["probability"])
        segments = GlobalSegments(z["segment_start"], z["segment_end"], z["segment_min_cells"],
                                  z["segment_average_samples"], z["segment_rank"])
        background, times = z["background"], z["times"]
    info = VideoInfo(**{k: (tuple(v) if k == "warnings" else v) for k, v in meta["video"].items()})
    auto = AutoParameters(**{k: v for k, v in meta.get("auto", {}).items()})
    return TrackingRun(info, settings, meta["fps"], times, background,
                       Detections.load(folder / "detections.npz"), result, segments, auto,
                       meta.get("timings_s", {}))
