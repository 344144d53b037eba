"""Visual identification benchmark on a hard synthetic case, and on the real recordings.

    python benchmarks/bench_identification.py [--individuals 8] [--frames 3000] [--shared]
                                              [--only synthetic,flies,test_A,test_B] [--epochs]

Generates 8 animals × 3000 frames (crossings in a third of the frames, identities told apart
only by a faint spot pattern), tracks and identifies it, and prints: identity accuracy against
the ground truth (after mapping labels, Hungarian on co-occurrence), the share of animal-frames
with an identity, the final uniqueness, training wall time, the whole run's time and the peak
RSS. ``--shared`` adds the flies (accuracy vs gt.csv) and the zebrafish (uniqueness,
identified tracklets) from ../shared/data. Figures, not asserts.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import rss_mb

SHOW_EPOCHS = False
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def run_one(path: Path, settings, truth=None, label: str = "") -> None:
    from napari_trex.core.evaluation import identity_accuracy, truth_per_detection
    from napari_trex.core.identification.pipeline import identify
    from napari_trex.core.pipeline import track_video
    from napari_trex.core.results import trajectory_table
    from napari_trex.core.video import open_video

    video = open_video(path)
    t0 = time.perf_counter()
    run = track_video(video, settings)
    t_track = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = identify(run, video, settings, progress=lambda e: (SHOW_EPOCHS or e["stage"] != "epoch")
                      and print("   ", e["message"], flush=True))
    t_ident = time.perf_counter() - t0
    table = trajectory_table(run, result.identities)
    ids = result.identities
    print(f"{label}: {len(video)} frames, {run.n_individuals} animals, device {result.device}")
    print(f"  tracking {t_track:.0f} s, identification {t_ident:.0f} s, total {t_track + t_ident:.0f} s; "
          f"peak RSS {rss_mb():.0f} MB")
    print(f"  final uniqueness {result.uniqueness:.4f}; tracklets with an identity "
          f"{(ids.identity >= 0).sum()}/{len(ids.identity)}; animal-frames with an identity "
          f"{(table['identity'] >= 0).mean():.2%}")
    if truth is not None:
        reference = truth_per_detection(table["x"], table["y"], table["frame"], truth, truth["distance"])
        accuracy, _ = identity_accuracy(table["identity"], reference)
        print(f"  identity accuracy vs ground truth: {accuracy:.4%} "
              f"(over {((table['identity'] >= 0) & (reference >= 0)).sum()} animal-frames)")


def main() -> int:
    from napari_trex.core.datasets import generate, read_ground_truth
    from napari_trex.core.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--individuals", type=int, default=8)
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--workdir")
    parser.add_argument("--shared", action="store_true")
    parser.add_argument("--only", help="comma-separated cases: synthetic, flies, test_A, test_B")
    parser.add_argument("--epochs", action="store_true", help="print every epoch too")
    args = parser.parse_args()
    global SHOW_EPOCHS
    SHOW_EPOCHS = args.epochs
    only = set(args.only.split(",")) if args.only else None

    def wanted(case: str) -> bool:
        return only is None or case in only

    work = Path(args.workdir or tempfile.mkdtemp(prefix="napari-trex-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"ident_{args.individuals}x{args.frames}.mp4"
    truth_path = path.with_name(f"{path.stem}_ground_truth.csv")
    if wanted("synthetic"):
        if not path.exists():
            generate(n_individuals=args.individuals, n_frames=args.frames, seed=7).write(path)
        truth = read_ground_truth(truth_path)
        truth["distance"] = 14.0
        settings = Settings().updated(track_max_individuals=args.individuals, track_max_speed=30.0,
                                      recognition_image_size=[48, 48])
        t0 = time.perf_counter()
        run_one(path, settings, truth, "synthetic")
        print(f"  whole benchmark case: {time.perf_counter() - t0:.0f} s")
    if (args.shared or only) and SHARED.is_dir():
        flies = SHARED / "sleap_flies_clip"
        table = np.genfromtxt(flies / "gt.csv", delimiter=",", names=True)
        gt = {"frame": table["frame"].astype(int), "identity": table["identity"].astype(int),
              "x": table["x"], "y": table["y"], "distance": 25.0}
        if wanted("flies"):
            run_one(flies / "clip.mp4", Settings().updated(
                cm_per_pixel=1.0, auto_minmax_size=True, track_max_individuals=2,
                track_max_speed=600.0, averaging_method="min", threshold=40, track_threshold=40,
                recognition_image_size=[64, 64], recognition_image_scale=0.5), gt, "flies")
        for name in ("test_A.avi", "test_B.avi"):
            if not wanted(name[:-4]):
                continue
            run_one(SHARED / "idtrackerai_zebrafish8" / name, Settings().updated(
                cm_per_pixel=1.0, auto_minmax_size=True, track_max_individuals=8,
                track_max_speed=900.0, averaging_method="max", threshold=25, track_threshold=25,
                track_max_reassign_time=0.1, recognition_image_size=[48, 48],
                recognition_image_scale=0.4), None, f"zebrafish {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
