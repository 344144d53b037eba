"""Track the real recordings in ../shared/data and summarise the tracklets.

    python benchmarks/track_shared_data.py [--out DIR]

Per video: tracklets, median length and N50 (half of the tracked frames lie in tracklets at
least this long), share of frames where all N animals are in tracklets, global segments.
Where a reference exists (flies: human ground truth; spiders: two tools that agree) the
tracklets are scored (mixed tracklets, coverage). A timeline PNG per video shows each
animal's tracklets as alternating colours (black: not tracked) for checking by eye.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# cm_per_pixel = 1: sizes in px², speeds in px/s
# averaging_method as TRex advises: max for dark animals on light, min for light animals on dark
# (the flies rest for two thirds of the clip: a mode background would contain them)
VIDEOS = {
    "idtrackerai_zebrafish8/test_A.avi": dict(track_max_individuals=8, track_max_speed=900.0,
                                              averaging_method="max", threshold=25, track_threshold=25,
                                              track_max_reassign_time=0.1),
    "idtrackerai_zebrafish8/test_B.avi": dict(track_max_individuals=8, track_max_speed=900.0,
                                              averaging_method="max", threshold=25, track_threshold=25,
                                              track_max_reassign_time=0.1),
    "sleap_flies_clip/clip.mp4": dict(track_max_individuals=2, track_max_speed=600.0,
                                      averaging_method="min", threshold=40, track_threshold=40),
    # the dark bars at the left and right edges of the spider video flicker: crop them away
    "tracktor_spider2/spider_video.mp4": dict(track_max_individuals=2, track_max_speed=900.0,
                                              averaging_method="max", threshold=20, track_threshold=20,
                                              crop_offsets=[0.03, 0.0, 0.06, 0.0]),
}
REFERENCES = {"sleap_flies_clip/clip.mp4": ("gt.csv", 25.0),
              "tracktor_spider2/spider_video.mp4": ("reference_tracktor.csv", 40.0)}


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


def main() -> int:
    from napari_trex.core.evaluation import score_tracklets
    from napari_trex.core.pipeline import track_video
    from napari_trex.core.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="shared_data_tracking")
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"{SHARED} not found")
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, values in VIDEOS.items():
        path = SHARED / name
        if not path.exists():
            continue
        settings = Settings().updated(cm_per_pixel=1.0, auto_minmax_size=True, **values)
        t0 = time.perf_counter()
        run = track_video(path, settings)
        elapsed = time.perf_counter() - t0
        t = run.result.tracklets
        lengths = np.sort(t.length)[::-1]
        n50 = int(lengths[np.searchsorted(np.cumsum(lengths), lengths.sum() / 2)])
        all_in = (run.result.tracklet_of >= 0).all(axis=1).mean()
        seg = run.segments
        seg_len = seg.end - seg.start + 1
        print(f"{name}: {len(run.result.assignment)} frames, N={run.n_individuals}, "
              f"size range {run.settings.blob_size_ranges[0][0]:.0f}-{run.settings.blob_size_ranges[0][1]:.0f} px², "
              f"{elapsed:.1f} s")
        print(f"  {len(t)} tracklets, median length {np.median(t.length):.0f}, N50 {n50} frames; "
              f"all {run.n_individuals} in tracklets in {all_in:.1%} of frames")
        print(f"  {len(seg)} global segments, longest {seg_len.max() if len(seg) else 0} frames, "
              f"best quality {seg.best()}")
        if name in REFERENCES:
            ref_name, distance = REFERENCES[name]
            table = np.genfromtxt(path.parent / ref_name, delimiter=",", names=True)
            truth = {"frame": table["frame"].astype(int), "identity": table["identity"].astype(int),
                     "x": table["x"], "y": table["y"]}
            det = run.result.detections
            score = score_tracklets(run.result.assignment, run.result.tracklet_of, det["x"], det["y"],
                                    det["frame"], truth, distance)
            print(f"  vs {ref_name}: {len(score.mixed)} mixed tracklets, coverage {score.coverage:.1%}")
        png = out / f"{path.parent.name}_{path.stem}_tracklets.png"
        timeline_png(run, png)
        print(f"  timeline: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
