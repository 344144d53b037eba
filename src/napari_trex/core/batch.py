"""The same settings on many videos: one dask task per video, failures reported, not fatal.

``run_batch(videos, settings, output_root)`` tracks (and optionally identifies) every video
into ``<output_root>/<video name>/`` on local processes, or on a dask.distributed cluster when
``scheduler`` is an address (``tcp://host:8786``) or a ``distributed.Client``. A video that
fails (corrupt file, no global segment, ...) gives a row with status ``failed`` and the reason;
the others go on. Each task writes its results atomically, so a crash never leaves half a run.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from .errors import NapariTrexError
from .settings import Settings


def process_video(video_path: str | os.PathLike, output_dir: str | os.PathLike, settings: Settings,
                  identify: bool = False, detection_scheduler: str = "threads",
                  overwrite: bool = False) -> dict[str, Any]:
    """Track (and identify) one video into ``output_dir`` through the one workflow (a matching
    run there is reused, corrections kept); a summary row for the batch table."""
    from .workflow import run_workflow

    started = time.perf_counter()
    outcome = run_workflow(video_path, output_dir, settings, identify=identify,
                           overwrite=overwrite, scheduler=detection_scheduler)
    run = outcome.run
    t = run.result.tracklets
    row = {"video": str(video_path), "status": "ok" if not outcome.reused or outcome.saved else "reused",
           "output": str(output_dir), "frames": len(run.result.assignment),
           "animals": run.n_individuals, "tracklets": len(t), "global_segments": len(run.segments),
           "seconds": round(time.perf_counter() - started, 1)}
    if outcome.identification is not None:
        row["uniqueness"] = round(float(outcome.identification.uniqueness), 4)
        row["uniqueness_all_frames"] = round(float(outcome.identification.uniqueness_all_frames), 4)
        with_parts = float(outcome.identification.uniqueness_with_parts)
        if math.isfinite(with_parts):  # ours is on whole animals: the figure with the parts beside it
            row["uniqueness_with_parts"] = round(with_parts, 4)
        row["identified_tracklets"] = int((outcome.identities.identity >= 0).sum())
    return row


def _safe_task(video_path: str, output_dir: str, settings_toml: str, identify: bool,
               overwrite: bool = False, cpu_share: int = 1) -> dict[str, Any]:
    """One batch task: never raises, so one bad video cannot stop the others. ``cpu_share``:
    how many tasks run at once on this machine (each takes its share of the cores for torch)."""
    import tomllib

    from .identification.network import CPU_SHARE_ENV

    os.environ[CPU_SHARE_ENV] = str(max(1, cpu_share))

    try:
        settings = Settings.from_mapping(tomllib.loads(settings_toml))
        return process_video(video_path, output_dir, settings, identify, overwrite=overwrite)
    except NapariTrexError as exc:
        return {"video": video_path, "status": "failed", "error": str(exc), "output": output_dir}
    except OSError as exc:
        return {"video": video_path, "status": "failed", "output": output_dir,
                "error": f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}"}
    except Exception as exc:  # noqa: BLE001 - reported in the summary table
        return {"video": video_path, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                "output": output_dir}


def output_dir_for(video: str | os.PathLike, output_root: str | os.PathLike | None) -> Path:
    """``<output_root>/<video stem>``, or ``<video>_trex`` beside the video without a root."""
    video = Path(video)
    if output_root:
        return Path(output_root) / video.stem
    return video.with_name(f"{video.stem}_trex")


def run_batch(videos: list[str | os.PathLike], settings: Settings, output_root: str | os.PathLike | None = None,
              identify: bool = False, scheduler: Any = "processes", overwrite: bool = False
              ) -> list[dict[str, Any]]:
    """Run every video as one dask task; returns one summary row per video, in order.

    ``scheduler``: ``processes`` (default), ``threads``, ``synchronous``, a dask.distributed
    address, or a ``distributed.Client``.
    """
    import dask

    if not videos:
        raise NapariTrexError("no videos given")
    outputs = [output_dir_for(v, output_root) for v in videos]
    if len({o.resolve() for o in outputs}) != len(outputs):
        raise NapariTrexError("two videos have the same name: their results would go to the same "
                              "folder; give them distinct names")
    text = settings.to_toml()
    local = isinstance(scheduler, str) and "://" not in scheduler
    share = min(len(videos), os.cpu_count() or 1) if local and scheduler != "synchronous" else 1
    tasks = [dask.delayed(_safe_task, pure=False)(str(v), str(o), text, identify, overwrite, share)
             for v, o in zip(videos, outputs)]
    if isinstance(scheduler, str) and "://" in scheduler:
        from .scheduling import distributed_client

        client = distributed_client(scheduler)
        with client:
            return list(client.gather(client.compute(tasks)))
    if not isinstance(scheduler, str):  # a distributed.Client
        return list(scheduler.gather(scheduler.compute(tasks)))
    return list(dask.compute(*tasks, scheduler=scheduler))


def summary_table(rows: list[dict[str, Any]]) -> str:
    """The table printed at the end of a batch."""
    columns = ["video", "status", "frames", "animals", "tracklets", "global_segments", "uniqueness",
               "seconds", "error"]
    present = [c for c in columns if any(c in r for r in rows)]
    cells = [[str(r.get(c, "")) if c != "video" else Path(r["video"]).name for c in present] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(present)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(present, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    ok = sum(r["status"] != "failed" for r in rows)
    lines.append(f"{ok} of {len(rows)} videos done" + (f", {len(rows) - ok} failed" if ok < len(rows) else ""))
    return "\n".join(lines)
