"""The output folder: CSV tables for people, NPZ state for the next steps, written atomically.

Files (all ours; anything else in the folder is left alone):

* ``trajectories.csv`` — one row per animal and frame where it was seen:
  ``frame,time,identity,x,y,angle,area,tracklet,split,tracking_slot,identity_confidence,
  identity_source`` (x, y px; angle in radians, the heading: moment orientation with head/tail
  resolved by the motion over the tracklet); after identification also one row per animal
  hidden in a blob of several (``identity_source`` interpolated, tracklet and slot -1);
* ``tracklets.csv`` — ``tracklet,identity,start,end,length,end_reason,end_code``;
* ``global_segments.csv`` — ``start,end,length,min_cells,average_samples,rank``;
* ``settings.toml`` — the settings actually used (automatic values filled in);
* ``detections.npz``, ``tracking.npz``, ``run.json`` — the state later steps resume from.

Everything is written into a staging folder inside the output folder first and then
renamed into place; ``run.json`` goes last, so a folder with a ``run.json`` always holds one
complete run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .detection import Detections
from .errors import NapariTrexError
from .model import AutoParameters, TrackingRun
from .settings import Settings
from .tracking import TrackingResult
from .tracklets import GlobalSegments, Tracklets, reason_names
from .video import VideoInfo

MIN_MOVING_FRAMES = 3  # frames of motion needed before motion tells head from tail
DECIDED_AGREEMENT = 0.3  # mean cos(heading - direction of motion) needed to trust it
IDENTIFICATION_FILES = ("identities.npz", "identification.json", "identification_weights.pt")
OUTPUT_FILES = ("trajectories.csv", "tracklets.csv", "global_segments.csv", "settings.toml",
                "detections.npz", "tracking.npz", "run.json")


def heading_angles(result: TrackingResult, with_decided: bool = False) -> Any:
    """Per detection row: the moment orientation turned into a heading (head direction).

    Orientation from moments is only defined modulo 180°. Within each tracklet the angle is
    first made continuous (each frame flipped to within 90° of the previous one), then the
    whole tracklet is flipped if that points against its direction of motion. An animal that
    rests (too little motion to say where its head is) keeps the moment orientation;
    ``with_decided`` also returns, per row, whether motion decided (identification then
    orients those crops by their shape instead, see ``samples.crop_sample``).
    """
    det = result.detections
    heading = det["angle"].astype(float).copy()
    decided = np.zeros(len(heading), bool)
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
                along = np.cos(angles[moving] - np.arctan2(vy[moving], vx[moving]))
                agreement = along.sum()
                if agreement < 0:
                    angles += np.pi
                # motion decides only where the animal moves along its body, clearly one way
                decided[rows] = moving.sum() >= MIN_MOVING_FRAMES and \
                    abs(agreement) >= DECIDED_AGREEMENT * moving.sum()
        heading[rows] = (angles + np.pi) % (2 * np.pi) - np.pi
    return (heading, decided) if with_decided else heading


def max_speed_px(run: TrackingRun) -> float:
    """``track_max_speed`` in px per second for this run's video."""
    return run.settings.track_max_speed / run.settings.pixel_size_cm(run.video_info.width)


def trajectory_table(run: TrackingRun, identities: Any = None, hidden: bool = False
                     ) -> dict[str, np.ndarray]:
    """Columns of ``trajectories.csv`` (frame-major, then tracking slot).

    Before identification ``identity`` is the tracking slot (``identity_source`` "tracking");
    after it, the identity of the row's tracklet (-1 where none could be given) with
    ``identity_confidence`` and ``identity_source``: how the tracklet got it (network, manual,
    elimination, inferred; see ``identification.assignment.SOURCES``). With ``hidden``, animals
    hidden in a blob of several get rows of their own, interpolated between the frames they are
    seen in (``identity_source`` "interpolated", no tracklet, slot -1, angle nan, area 0).
    """
    result = run.result
    frames, slots = np.nonzero(result.assignment >= 0)
    rows = result.assignment[frames, slots]
    det = result.detections
    heading = heading_angles(result)
    tracklet = result.tracklet_of[frames, slots]
    if identities is None:
        identity, confidence = slots, np.zeros(len(slots))
        source = np.full(len(slots), "tracking", dtype=object)
    else:
        known = tracklet >= 0
        identity = np.where(known, identities.identity[np.maximum(tracklet, 0)], -1)
        confidence = np.where(known & (identity >= 0),
                              identities.probability[np.maximum(tracklet, 0)], 0.0)
        source = np.where(identity >= 0, identities.source[np.maximum(tracklet, 0)], "").astype(object)
    table = {
        "frame": frames, "time": run.times[frames], "identity": identity,
        "x": det["x"][rows], "y": det["y"][rows], "angle": heading[rows], "area": det["area"][rows],
        "tracklet": tracklet, "split": det["split"][rows].astype(int), "tracking_slot": slots,
        "identity_confidence": confidence, "identity_source": source,
    }
    if hidden and identities is not None:
        from .identification.assignment import INTERPOLATED, hidden_positions

        more = hidden_positions(result, identities, run.n_individuals, run.fps, max_speed_px(run))
        m = len(more["frame"])
        extra = {"frame": more["frame"], "time": run.times[more["frame"]], "identity": more["identity"],
                 "x": more["x"], "y": more["y"], "angle": np.full(m, np.nan), "area": np.zeros(m),
                 "tracklet": np.full(m, -1), "split": np.zeros(m, int), "tracking_slot": np.full(m, -1),
                 "identity_confidence": np.zeros(m),
                 "identity_source": np.full(m, INTERPOLATED, dtype=object)}
        order = np.lexsort((np.concatenate([table["identity"], extra["identity"]]),
                            np.concatenate([table["frame"], extra["frame"]])))
        table = {k: np.concatenate([v, extra[k].astype(v.dtype)])[order] for k, v in table.items()}
    return table


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


JOURNAL = ".napari-trex-swap.json"  # a save in progress: which staged files go where
STAGING_PREFIX = ".napari-trex-"
CORRECTIONS_FILE = "corrections.json"
STALE_WITH_NEW_TRACKING = ("identities.npz", "identification.json")  # per tracklet: of one run
DAMAGED = (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile)


def recover(folder: str | os.PathLike) -> None:
    """Finish a save that was interrupted (killed, power cut) or clean up after one.

    A save stages every file in a hidden folder, then writes a journal naming the files to move
    and the files to remove, then moves them. Whoever opens the folder next completes the moves
    the journal lists (everything staged was complete before the journal was written), so the
    folder is always one whole run: the old one or the new one. Staging folders without a
    journal are leftovers of a save that never got that far, and go.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    journal = folder / JOURNAL
    if journal.is_file():
        try:
            plan = json.loads(journal.read_text(encoding="utf-8"))
            staging = folder / plan["staging"]
            for name in plan["remove"]:
                (folder / name).unlink(missing_ok=True)
            for name in plan["files"]:  # run.json is last: the run is whole once it is there
                if (staging / name).exists():
                    os.replace(staging / name, folder / name)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise NapariTrexError(f"{folder}: an interrupted save could not be completed ({exc}); "
                                  f"remove {journal.name} and the hidden {STAGING_PREFIX}* "
                                  "folders to go back to the files as they are") from None
        journal.unlink()
    for leftover in folder.glob(f"{STAGING_PREFIX}*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)


def _swap_in(folder: Path, staging: Path, files: list[str], remove: list[str]) -> None:
    """Move the staged ``files`` into ``folder`` and delete ``remove`` there, all or nothing
    (see :func:`recover`)."""
    from .io import atomic_write_text

    atomic_write_text(folder / JOURNAL, json.dumps(
        {"staging": staging.name, "files": files, "remove": remove}))
    recover(folder)


def save_tracking(run: TrackingRun, output_dir: Path, identification: Any = None, *,
                  identities: Any = None, edited: np.ndarray | None = None,
                  settings: Settings | None = None, corrections: Any = None,
                  drop: tuple[str, ...] = ()) -> list[Path]:
    """Write a run into ``output_dir``, replacing a previous run there, never half-written.

    With ``identification`` (an :class:`~napari_trex.core.identification.pipeline.
    IdentificationResult`) the tables carry the final identities and the network's files
    are written too. ``identities`` alone (corrected by hand) replaces ``identities.npz`` and
    keeps the network's files; ``edited`` marks the tracklets the user changed; ``settings``
    (e.g. with the corrections as ``manual_matches``) is what ``settings.toml`` records;
    ``corrections`` (a :class:`~napari_trex.core.corrections.CorrectionsRecord`) is written as
    ``corrections.json``. Nothing else of an earlier run is removed, except per-tracklet
    identities of another tracking (they would name the wrong tracklets) and the files named
    in ``drop`` (the workflow decides those, with the user's ``--overwrite``).
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    recover(output_dir)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=output_dir))
    if identities is None and identification is not None:
        identities = identification.identities
    try:
        traj = trajectory_table(run, identities, hidden=True)
        _write_csv(staging / "trajectories.csv", traj,
                   {"time": "%.5f", "x": "%.3f", "y": "%.3f", "angle": "%.5f", "area": "%d",
                    "identity_confidence": "%.4f", "identity_source": "%s"})
        t = run.result.tracklets
        with open(staging / "tracklets.csv", "w", encoding="utf-8") as fh:
            header = "tracklet,identity,tracking_slot,start,end,length,end_reason,end_code"
            if identities is not None:
                header += ",probability,second_probability,n_samples,source"
            fh.write(header + "\n")
            for tid, ind, a, b, code in zip(t.id, t.individual, t.start, t.end, t.end_reason):
                identity = ind if identities is None else identities.identity[tid]
                line = f"{tid},{identity},{ind},{a},{b},{b - a + 1},{reason_names(int(code))},{code}"
                if identities is not None:
                    vector = identities.mean_vectors[tid]
                    second = np.sort(vector)[-2] if not np.isnan(vector).any() and len(vector) > 1 else 0.0
                    line += (f",{identities.probability[tid]:.4f},{second:.4f},"
                             f"{identities.n_samples[tid]},{identities.source[tid]}")
                fh.write(line + "\n")
        g = run.segments
        _write_csv(staging / "global_segments.csv",
                   {"start": g.start, "end": g.end, "length": g.end - g.start + 1,
                    "min_cells": g.min_cells, "average_samples": g.average_samples, "rank": g.rank},
                   {"average_samples": "%.1f"})
        used = identification.settings if identification is not None and identification.settings else None
        (settings or used or run.settings).save(staging / "settings.toml")
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
        extra = _identification_files(identification, staging, run) if identification else []
        if identities is not None:
            _write_identities(staging / "identities.npz", identities, edited, run.run_id)
            extra = list(dict.fromkeys([*extra, "identities.npz"]))
        if corrections is not None:
            (staging / CORRECTIONS_FILE).write_text(json.dumps(corrections.to_json(), indent=1),
                                                    encoding="utf-8")
            extra.append(CORRECTIONS_FILE)
        meta = {
            "napari_trex_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "video": run.video_info.as_dict(), "fingerprint": run.fingerprint, "run_id": run.run_id,
            "fps": run.fps, "n_individuals": run.n_individuals,
            "auto": asdict(run.auto), "timings_s": run.timings,
            "identified": identities is not None,
        }
        (staging / "run.json").write_text(json.dumps(meta, indent=2, default=float), encoding="utf-8")
        remove = [name for name in drop if name not in extra]
        if identities is None and _saved_run_id(output_dir) != run.run_id:
            remove += [n for n in STALE_WITH_NEW_TRACKING if n not in remove]
        files = [*OUTPUT_FILES[:-1], "tracked_detections.npz", *extra, "run.json"]
        _swap_in(output_dir, staging, files, remove)
        return [output_dir / name for name in files]
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _saved_run_id(folder: Path) -> str | None:
    """The run id recorded in ``folder``'s identities (None when there are none or unknown)."""
    path = folder / "identities.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return str(z["run_id"]) if "run_id" in z.files else None
    except DAMAGED:
        return None


def load_tracking(output_dir: str | os.PathLike) -> TrackingRun:
    """Read back a run saved by :func:`save_tracking` (to resume without re-detecting)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        raise NapariTrexError(f"{folder} is not a results folder (it does not exist or is a file)")
    recover(folder)
    marker = folder / "run.json"
    if not marker.is_file():
        raise NapariTrexError(f"{folder} holds no complete tracking run (no run.json)")
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
        settings = Settings.load(folder / "settings.toml")
        with np.load(folder / "tracking.npz") as z:
            tracklets = Tracklets(z["tracklet_id"], z["tracklet_individual"], z["tracklet_start"],
                                  z["tracklet_end"], z["tracklet_end_reason"])
            tracked = Detections.load(folder / "tracked_detections.npz")
            result = TrackingResult(tracked, z["assignment"], tracklets, z["tracklet_of"],
                                    z["probability"])
            segments = GlobalSegments(z["segment_start"], z["segment_end"], z["segment_min_cells"],
                                      z["segment_average_samples"], z["segment_rank"])
            background, times = z["background"], z["times"]
        info = VideoInfo(**{k: (tuple(v) if k == "warnings" else v) for k, v in meta["video"].items()})
        known = {f.name for f in dataclasses.fields(AutoParameters)}
        auto = AutoParameters(**{k: v for k, v in meta.get("auto", {}).items() if k in known})
        detections = Detections.load(folder / "detections.npz")
        fps = meta["fps"]
    except NapariTrexError:
        raise
    except DAMAGED as exc:
        raise NapariTrexError(f"{folder} holds a damaged run ({type(exc).__name__}: {exc}); "
                              "track the video again into this folder") from None
    run = TrackingRun(info, settings, fps, times, background, detections, result, segments, auto,
                      meta.get("timings_s", {}))
    run.run_id = meta.get("run_id") or run.run_id
    run.fingerprint = meta.get("fingerprint", {})
    return run


def load_corrections(output_dir: str | os.PathLike) -> Any:
    """The folder's :class:`~napari_trex.core.corrections.CorrectionsRecord`: ``corrections.json``,
    or for folders written before it existed the ``manual_*`` of ``settings.toml`` plus the
    tracklets marked "not an animal" in ``identities.npz``. Empty where the folder has none."""
    from .corrections import CorrectionsRecord

    folder = Path(output_dir)
    path = folder / CORRECTIONS_FILE
    if path.is_file():
        try:
            return CorrectionsRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
        except ValueError as exc:
            raise NapariTrexError(f"{path} is damaged ({exc}); nothing was changed") from None
    if not (folder / "settings.toml").is_file():
        return CorrectionsRecord()
    record = CorrectionsRecord.from_settings(Settings.load(folder / "settings.toml"))
    try:
        run = load_tracking(folder)
        identities, _ = load_identities_and_edits(folder)
    except NapariTrexError:
        return record
    if identities is not None and len(identities.identity) == len(run.result.tracklets):
        from .corrections import REMOVED, Corrections

        edits = Corrections.start(run.result, identities, record=record)
        for tid in np.flatnonzero(identities.source == REMOVED):
            edits.remove(int(tid))  # recorded by blob: it survives a retrack
        record = edits.record
    return record


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: a figure that was not measured is written as null."""
    return float(value) if np.isfinite(value) else None


def _identification_files(identification: Any, staging: Path, run: TrackingRun) -> list[str]:
    """Weights, per-tracklet identities, the training history, and the validation samples."""
    from .identification.assignment import SOURCES
    from .identification.network import save_weights

    ids = identification.identities
    save_weights(identification.model, staging / "identification_weights.pt",
                 {"uniqueness": identification.uniqueness})
    info = {"uniqueness": identification.uniqueness,
            "uniqueness_all_frames": identification.uniqueness_all_frames,
            # where the uniqueness is on whole animals: with the parts at contacts (else null)
            "uniqueness_with_parts": _finite_or_none(getattr(identification, "uniqueness_with_parts",
                                                             float("nan"))),
            "device": identification.device,
            "seconds": identification.seconds, "steps": identification.steps,
            "identified_tracklets": int((ids.identity >= 0).sum()), "tracklets": len(ids.identity),
            "sources": {s: int((ids.source == s).sum()) for s in SOURCES},
            "holdout": getattr(identification, "holdout", {})}
    (staging / "identification.json").write_text(json.dumps(info, indent=2, default=float),
                                                  encoding="utf-8")
    names = list(IDENTIFICATION_FILES)
    settings = identification.settings or run.settings
    if settings.recognition_save_training_images and identification.training is not None:
        val, train = identification.validation, identification.training
        name = f"{Path(run.video_info.path).stem}_validation_samples.npz"
        # labels are the network's classes, i.e. the final identities
        np.savez_compressed(
            staging / name, validation_ids=val.label, validation_images=val.images[..., None],
            ids=np.concatenate([val.label, train.label]),
            images=np.concatenate([val.images, train.images])[..., None])
        names.append(name)
    return names


def _write_identities(path: Path, ids: Any, edited: np.ndarray | None, run_id: str) -> None:
    edited = np.zeros(len(ids.identity), bool) if edited is None else np.asarray(edited, bool)
    np.savez_compressed(path, identity=ids.identity, probability=ids.probability,
                        n_samples=ids.n_samples, source=ids.source.astype(str),
                        mean_vectors=ids.mean_vectors, edited=edited, run_id=np.array(run_id))


def load_identities(output_dir: str | os.PathLike) -> Any:
    """The per-tracklet identities saved by an identification run (or by corrections), or None."""
    return load_identities_and_edits(output_dir)[0]


def load_identities_and_edits(output_dir: str | os.PathLike) -> tuple[Any, np.ndarray | None]:
    """Identities and which tracklets the user edited (None, None when there are none)."""
    from .identification.assignment import LEGACY_SOURCES, TrackletIdentities

    path = Path(output_dir) / "identities.npz"
    if not path.is_file():
        return None, None
    try:
        with np.load(path, allow_pickle=False) as z:
            source = np.array([LEGACY_SOURCES.get(v, v) for v in z["source"].tolist()], dtype=object)
            ids = TrackletIdentities(z["identity"], z["probability"], z["n_samples"], source,
                                     z["mean_vectors"])
            edited = z["edited"] if "edited" in z.files else np.zeros(len(ids.identity), bool)
    except DAMAGED as exc:
        raise NapariTrexError(f"{path} is damaged ({type(exc).__name__}: {exc}); identify again "
                              "or remove it") from None
    return ids, edited
