"""Tracking benchmark: throughput against raw decoding, and memory against video length.

    python benchmarks/bench_tracking.py [--individuals 8] [--frames 3000] [--repeat 4]

Generates one synthetic video (8 animals, 3000 frames, 512², H.264 with a keyframe every
250 frames) and a 4x longer one (the same packets repeated, no re-encoding). Each is
measured in a fresh process so peak memory (RSS) is its own:

* decode-only fps (our sequential reader: PyAV, greyscale);
* the tracking pass: detection (dask, all cores) + tracking, fps and ratio to decode-only;
* sampling/background time (a fixed cost: ``average_samples`` frames);
* tracking-only ms/frame (the sequential linker);
* peak RSS.

For the 1x video it also scores the tracklets against the ground truth (mixed tracklets,
coverage). Figures, not asserts: compare ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import repeat_video, rss_mb


def measure(path: Path, individuals: int, scheduler: str, truth: Path | None) -> dict:
    from napari_trex.core.pipeline import track_video
    from napari_trex.core.settings import Settings
    from napari_trex.core.video import open_video

    video = open_video(path)
    n = len(video)
    t0 = time.perf_counter()
    for _ in video.frames():
        pass
    decode = time.perf_counter() - t0
    settings = Settings().updated(track_max_individuals=individuals, track_max_speed=30.0)
    t0 = time.perf_counter()
    run = track_video(video, settings, scheduler=scheduler)
    total = time.perf_counter() - t0
    out = {
        "frames": n, "decode_fps": n / decode, "total_s": total,
        "sampling_s": run.timings["background"] + run.timings["parameters"],
        "detection_s": run.timings["detection"], "tracking_s": run.timings["tracking"],
        "tracklets": len(run.result.tracklets), "segments": len(run.segments),
        "peak_rss_mb": rss_mb(),
    }
    if truth is not None:
        from napari_trex.core.datasets import read_ground_truth
        from napari_trex.core.evaluation import score_tracklets

        det = run.result.detections
        score = score_tracklets(run.result.assignment, run.result.tracklet_of, det["x"], det["y"],
                                det["frame"], read_ground_truth(truth), 14)
        out.update(mixed=len(score.mixed), coverage=score.coverage)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--individuals", type=int, default=8)
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=4, help="length of the long video, in copies")
    parser.add_argument("--scheduler", default="threads")
    parser.add_argument("--workdir")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--truth", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        truth = Path(args.truth) if args.truth else None
        print(json.dumps(measure(Path(args.measure), args.individuals, args.scheduler, truth)))
        return 0

    from napari_trex.core.datasets import generate

    work = Path(args.workdir or tempfile.mkdtemp(prefix="napari-trex-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    base = work / f"synthetic_{args.individuals}x{args.frames}.mp4"
    truth = base.with_name(f"{base.stem}_ground_truth.csv")
    if not base.exists():
        t0 = time.perf_counter()
        generate(n_individuals=args.individuals, n_frames=args.frames, seed=1).write(base)
        print(f"generated {base.name} in {time.perf_counter() - t0:.0f} s")
    long = work / f"synthetic_{args.individuals}x{args.frames}_x{args.repeat}.mp4"
    if not long.exists():
        repeat_video(base, long, args.frames * args.repeat)
    import os

    print(f"machine: {os.cpu_count()} cores; scheduler: {args.scheduler}")
    for path, label, gt in ((base, "1x", truth), (long, f"{args.repeat}x", None)):
        cmd = [sys.executable, __file__, "--measure", str(path), "--individuals", str(args.individuals),
               "--scheduler", args.scheduler]
        if gt is not None:
            cmd += ["--truth", str(gt)]
        result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        frames = result["frames"]
        pass_s = result["detection_s"] + result["tracking_s"]
        pass_fps = frames / pass_s
        print(f"{label}: {frames} frames")
        print(f"  decode-only:        {result['decode_fps']:.0f} fps")
        print(f"  detection+tracking: {pass_fps:.0f} fps  ->  ratio to decode-only {pass_fps / result['decode_fps']:.2f}")
        print(f"    detection {frames / result['detection_s']:.0f} fps, tracking only "
              f"{result['tracking_s'] / frames * 1000:.2f} ms/frame")
        print(f"  sampling + background + auto parameters: {result['sampling_s']:.1f} s; whole run "
              f"{result['total_s']:.1f} s ({frames / result['total_s']:.0f} fps overall)")
        print(f"  {result['tracklets']} tracklets, {result['segments']} global segments; "
              f"peak RSS {result['peak_rss_mb']:.0f} MB")
        if "mixed" in result:
            print(f"  vs ground truth: {result['mixed']} mixed tracklets, coverage {result['coverage']:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
