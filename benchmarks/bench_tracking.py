"""Tracking benchmark: tracklet quality on realistic generated videos, throughput against raw
decoding, and memory against video length.

    python benchmarks/bench_tracking.py [--frames 3000] [--seeds 1,2,3] [--individuals 4,8]
                                        [--speed-only | --quality-only] [--workdir DIR]

Videos come from the realistic mode of the generator (posture, legs that break off at the
threshold, different sizes, resting, contacts that last seconds, uneven flickering light;
``napari_trex.core.datasets``), 512², H.264 with a keyframe every 250 frames, cached in
``--workdir`` (default ``benchmarks/_data``).

Quality, per video (the invariants of the tracklets issue): mixed tracklets (must be 0),
share of ground-truth animal-frames in a tracklet (>= 98 %), N50 (half of the tracked
animal-frames lie in tracklets at least this long; >= 100), one-frame tracklets and how many
of them lie where nothing happens: the animal touches nobody and its blob holds no other
animal, in that frame or the frames beside it (0), and why tracklets ended.

Speed, on the 8-animal video of the first seed, each measurement in a fresh process (so peak
memory is its own), start-up (background, automatic parameters, starting workers) taken out:
decode-only fps (our sequential reader) against detection + tracking fps, measured side by side
in one run, alternating ``--repeat`` times; the ratio of the medians is the figure to quote. For
both schedulers: ``processes`` (the command line's default) and ``threads`` (napari's). Then
the same video 4x longer (the packets repeated, no re-encoding): peak memory must not grow
with length. Figures, not asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import repeat_video, rss_mb

HERE = Path(__file__).resolve().parent


def video_for(workdir: Path, individuals: int, frames: int, seed: int) -> tuple[Path, Path]:
    """The cached realistic video and its ground truth (generated the first time)."""
    from napari_trex.core.datasets import generate

    path = workdir / f"realistic_{individuals}x{frames}_seed{seed}.mp4"
    truth = path.with_name(f"{path.stem}_ground_truth.csv")
    if not (path.exists() and truth.exists()):
        t0 = time.perf_counter()
        generate(n_individuals=individuals, n_frames=frames, seed=seed, realistic=True).write(path)
        print(f"  (generated {path.name} in {time.perf_counter() - t0:.0f} s)", flush=True)
    return path, truth


def settings_for(individuals: int):
    from napari_trex.core.settings import Settings

    # 512 px = 30 cm (cm_per_pixel 0): animals move up to ~4 body lengths/s = ~3 cm/s
    return Settings().updated(track_max_individuals=individuals, track_max_speed=30.0)


def quality(path: Path, truth_path: Path, individuals: int) -> dict:
    from napari_trex.core.datasets import read_ground_truth
    from napari_trex.core.evaluation import tracklet_report
    from napari_trex.core.pipeline import track_video

    t0 = time.perf_counter()
    run = track_video(path, settings_for(individuals), scheduler="processes")
    elapsed = time.perf_counter() - t0
    truth = read_ground_truth(truth_path)
    report = tracklet_report(run, truth, max_distance=14)
    contact = truth["contact"].reshape(-1, individuals)
    return {"lines": report.lines(), "mixed": len(report.mixed), "coverage": report.coverage,
            "n50": report.n50, "one_frame_without_contact": report.one_frame_without_contact,
            "seconds": elapsed, "contact_frames": float(contact.any(axis=1).mean()),
            "contact_animal_frames": float(contact.mean())}


def speed(path: Path, individuals: int, scheduler: str, repeat: int) -> dict:
    import numpy as np

    from napari_trex.core.pipeline import track_video
    from napari_trex.core.video import open_video

    video = open_video(path)
    n = len(video)
    decode, passes = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in video.frames():
            pass
        decode.append(time.perf_counter() - t0)
        run = track_video(video, settings_for(individuals), scheduler=scheduler)
        timings = run.timings
        passes.append(timings.get("detection+tracking")
                      or timings["detection"] + timings["tracking"])
    return {"frames": n, "decode_fps": [n / d for d in decode], "pass_fps": [n / p for p in passes],
            "ratio": float(np.median(decode) / np.median(passes)),
            "startup_s": run.timings["background"] + run.timings["parameters"],
            "tracklets": len(run.result.tracklets), "peak_rss_mb": rss_mb()}


def in_fresh_process(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--individuals", default="4,8")
    parser.add_argument("--repeat", type=int, default=3, help="alternations of decode and pass")
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--quality-only", action="store_true")
    parser.add_argument("--workdir", default=str(HERE / "_data"))
    parser.add_argument("--measure", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:  # in a fresh process: kind path individuals scheduler
        kind, path, individuals, scheduler = args.measure
        print(json.dumps(speed(Path(path), int(individuals), scheduler, args.repeat)))
        return 0

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    groups = [int(n) for n in args.individuals.split(",")]
    print(f"machine: {os.cpu_count()} cores; realistic videos {args.frames} frames, 512 px")
    if not args.speed_only:
        for individuals in groups:
            for seed in seeds:
                path, truth = video_for(workdir, individuals, args.frames, seed)
                q = quality(path, truth, individuals)
                print(f"{individuals} animals, seed {seed} ({q['contact_frames']:.0%} of frames with a "
                      f"contact, {q['contact_animal_frames']:.0%} of animal-frames): {q['seconds']:.0f} s")
                for line in q["lines"]:
                    print("  " + line)
                ok = (q["mixed"] == 0 and q["coverage"] >= 0.98 and q["n50"] >= 100
                      and q["one_frame_without_contact"] == 0)
                print(f"  invariants (0 mixed, >= 98 % covered, N50 >= 100, one-frame only at "
                      f"contacts): {'hold' if ok else 'BROKEN'}", flush=True)
    if not args.quality_only:
        individuals = max(groups)
        path, _ = video_for(workdir, individuals, args.frames, seeds[0])
        long = workdir / f"{path.stem}_x4.mp4"
        if not long.exists():
            repeat_video(path, long, args.frames * 4)
        for scheduler in ("processes", "threads"):
            for video, label in ((path, "1x"), (long, "4x")):
                r = in_fresh_process("--measure", "speed", str(video), str(individuals), scheduler,
                                     "--repeat", str(args.repeat if label == "1x" else 1))
                decode = " ".join(f"{v:.0f}" for v in r["decode_fps"])
                passes = " ".join(f"{v:.0f}" for v in r["pass_fps"])
                print(f"{scheduler}, {label} ({r['frames']} frames): decode-only {decode} fps; "
                      f"detection+tracking {passes} fps; ratio of medians {r['ratio']:.2f}; "
                      f"start-up {r['startup_s']:.1f} s; peak RSS {r['peak_rss_mb']:.0f} MB",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
