"""Track the real recordings in ../shared/data and summarise the tracklets.

    python benchmarks/track_shared_data.py [--out DIR] [--only flies,spiders,test_A,test_B]

Per video, with the settings documented below (``VIDEOS``): tracklets, median length, N50 (half
of the tracked animal-frames lie in tracklets at least this long), one-frame tracklets, the
share of frames where all N animals are in tracklets, global segments, why tracklets ended.
Where a reference exists the tracklets are scored: the flies against ``gt.csv`` (human-checked;
coverage, mixed tracklets, tracklets per fly against the fly's real detection gaps), the
spiders against the Tracktor reference (two tools that agree). A timeline PNG per video shows
each animal's tracklets as alternating colours (black: not tracked; white marks on top:
global segments) for checking by eye.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# The documented settings. cm_per_pixel = 1, so sizes are px² and speeds px/s; the size range is
# estimated (auto_minmax_size); the background is the default (mode of the samples in which no
# animal covers a pixel: resting flies and the near-stationary female spider stay detected).
VIDEOS = {
    # zebrafish: 28 fps, fish dart at up to ~30 px/frame; crossings are real merges
    "test_A": ("idtrackerai_zebrafish8/test_A.avi",
               dict(track_max_individuals=8, track_max_speed=900.0, threshold=25,
                    track_threshold=25, track_max_reassign_time=0.1)),
    "test_B": ("idtrackerai_zebrafish8/test_B.avi",
               dict(track_max_individuals=8, track_max_speed=900.0, threshold=25,
                    track_threshold=25, track_max_reassign_time=0.1)),
    # flies: bright on a dark mesh floor; 25 fps, at most ~10 px/frame
    "flies": ("sleap_flies_clip/clip.mp4",
              dict(track_max_individuals=2, track_max_speed=600.0, threshold=40,
                   track_threshold=40)),
    # spiders: thin-legged on a cluttered light wall; the dark bars at the left and right edges
    # flicker (cropped away); a low threshold and a closing keep the legs on the body; the male
    # jumps up to ~19 px/frame at 60 fps
    "spiders": ("tracktor_spider2/spider_video.mp4",
                dict(track_max_individuals=2, track_max_speed=1500.0, threshold=14,
                     track_threshold=14, use_closing=True, closing_size=7,
                     crop_offsets=[0.03, 0.0, 0.06, 0.0])),
}
REFERENCES = {"flies": ("gt.csv", 25.0), "spiders": ("reference_tracktor.csv", 40.0)}


def timeline_png(run, path: Path, height_per_row: int = 24, width: int = 1200) -> None:
    from imageio import v3 as iio

    n_frames, n = run.result.assignment.shape
    image = np.zeros((n * height_per_row, width, 3), np.uint8)
    palette = np.array([[230, 159, 0], [86, 180, 233], [0, 158, 115], [240, 228, 66]], np.uint8)

    def col(frame: int) -> int:
        return min(width - 1, int(frame * width / n_frames))

    t = run.result.tracklets
    for tid, slot, a, b in zip(t.id, t.individual, t.start, t.end):
        top = slot * height_per_row
        image[top + 2: top + height_per_row - 2, col(a): max(col(a) + 1, col(b + 1))] = \
            palette[tid % len(palette)]
    for a, b in zip(run.segments.start, run.segments.end):  # global segments: white marks on top
        image[0:2, col(a): max(col(a) + 1, col(b + 1))] = 255
    iio.imwrite(path, image)


def reference_table(path: Path) -> dict[str, np.ndarray]:
    table = np.genfromtxt(path, delimiter=",", names=True)
    return {"frame": table["frame"].astype(int), "identity": table["identity"].astype(int),
            "x": table["x"], "y": table["y"]}


def per_animal_gaps(run, truth: dict[str, np.ndarray], distance: float) -> list[str]:
    """Per reference animal: its tracklets, and the runs of frames in which no blob in
    ``blob_size_ranges`` lies near it (real detection gaps: nothing to track there)."""
    from napari_trex.core.evaluation import truth_per_detection

    result = run.result
    det = result.detections
    n_frames = result.assignment.shape[0]
    lo = min(a for a, _ in run.settings.blob_size_ranges)
    in_range = np.flatnonzero(det["area"] >= lo)
    detected_as = truth_per_detection(det["x"], det["y"], det["frame"], truth, distance, in_range)
    tracked_as = truth_per_detection(det["x"], det["y"], det["frame"], truth, distance,
                                     np.unique(result.assignment[result.assignment >= 0]))
    lines = []
    for animal in np.unique(truth["identity"]):
        seen = np.zeros(n_frames, bool)
        seen[det["frame"][detected_as == animal]] = True
        present = np.zeros(n_frames, bool)
        present[truth["frame"][truth["identity"] == animal]] = True
        missing = present & ~seen
        gaps = int((missing[1:] & ~missing[:-1]).sum() + missing[0])
        rows = np.flatnonzero(tracked_as == animal)
        frames, slots = np.nonzero(np.isin(result.assignment, rows))
        tracklets = len(np.unique(result.tracklet_of[frames, slots]))
        lines.append(f"animal {animal}: {tracklets} tracklet(s), {gaps} real detection gap(s) "
                     f"({missing.sum()} frames without a blob in range); "
                     f"at most 2 per gap: {'yes' if tracklets <= 2 * gaps + 1 else 'NO'}")
    return lines


def main() -> int:
    from napari_trex.core.evaluation import n50, score_tracklets
    from napari_trex.core.pipeline import track_video
    from napari_trex.core.settings import Settings
    from napari_trex.core.tracklets import reason_names

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="shared_data_tracking")
    parser.add_argument("--only", default=",".join(VIDEOS))
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"{SHARED} not found")
        return 1
    unknown = [key for key in args.only.split(",") if key not in VIDEOS]
    if unknown:
        print(f"unknown video(s) {', '.join(unknown)}: choose from {', '.join(VIDEOS)}")
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for key in args.only.split(","):
        name, values = VIDEOS[key]
        path = SHARED / name
        if not path.exists():
            continue
        settings = Settings().updated(cm_per_pixel=1.0, auto_minmax_size=True, **values)
        t0 = time.perf_counter()
        run = track_video(path, settings, scheduler="processes")
        elapsed = time.perf_counter() - t0
        t = run.result.tracklets
        tracked = run.result.tracklet_of >= 0
        seg = run.segments
        seg_len = seg.end - seg.start + 1
        reasons: dict[str, int] = {}
        for code in t.end_reason:
            for reason in reason_names(int(code)).split("|"):
                reasons[reason] = reasons.get(reason, 0) + 1
        lo, hi = run.settings.blob_size_ranges[0]
        print(f"{key} ({name}): {len(run.result.assignment)} frames, N={run.n_individuals}, "
              f"size range {lo:.0f}-{hi:.0f} px², {elapsed:.1f} s")
        for line in run.auto.describe():
            print(f"  {line}")
        print(f"  {len(t)} tracklets, median length {np.median(t.length):.0f}, N50 {n50(t.length)} "
              f"frames, {(t.length == 1).sum()} of one frame; all {run.n_individuals} in tracklets "
              f"in {tracked.all(axis=1).mean():.1%} of frames")
        print(f"  {len(seg)} global segments, longest {seg_len.max() if len(seg) else 0} frames, "
              f"best quality {seg.best()}")
        print("  ends: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])))
        if key in REFERENCES:
            ref_name, distance = REFERENCES[key]
            truth = reference_table(path.parent / ref_name)
            det = run.result.detections
            score = score_tracklets(run.result.assignment, run.result.tracklet_of, det["x"], det["y"],
                                    det["frame"], truth, distance)
            print(f"  vs {ref_name}: {len(score.mixed)} mixed tracklets, coverage {score.coverage:.2%}")
            for line in per_animal_gaps(run, truth, distance):
                print(f"    {line}")
        png = out / f"{path.parent.name}_{path.stem}_tracklets.png"
        timeline_png(run, png)
        print(f"  timeline: {png}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
