"""Visual identification benchmark: the cases of the identification issue, with default settings.

    python benchmarks/bench_identification.py [--only realistic,crowded10,crowded20,sample,flies,test_A,test_B]
                                              [--seeds 1,2] [--workdir DIR] [--epochs]

Cases (each tracked and identified from scratch, the crop size automatic):
  realistic  the generator's realistic mode (posture, legs, resting, long contacts, sizes,
             uneven light), 8 animals x 3000 frames, one video per seed (--seeds)
  crowded10, crowded20  the realistic mode with 10 (body 40 px) / 20 (body 28 px) animals that
             seek each other's contact (sociality 0.6): no moment shows all of them apart;
             identification starts from tracklet pairs where the tracklets (which go on
             through clean splits) leave no global segment
  sample     the bundled sample (4 animals x 500 frames), what a newcomer tries first
  flies      ../shared/data/sleap_flies_clip against gt.csv, once per seed (--seeds)
  test_A/B   ../shared/data/idtrackerai_zebrafish8 (no ground truth: uniqueness, the share of
             N x frames with an identity, and the agreement with idtracker.ai's tracks, a tool
             baseline scored like ground truth: "right" there means "as idtracker.ai says")

Per case it prints: the share of ground-truth animal-frames whose identity sits on its animal
(``evaluation.identity_score``: a missing identity counts as wrong), wrong and missing counts,
the share of the N x frames expected animal-frames with an identity and by which source
(network, elimination, inferred), the final uniqueness, the tracking and identification
wall times, and the peak RSS of this process. Figures, not asserts. Run it on an idle machine:
the times are wall-clock on whatever cores torch gets.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _common import rss_mb

SHOW_EPOCHS = False
START_FROM = "automatic"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def run_one(path: Path, settings, truth=None, label: str = "", distance: float = 14.0,
            truth_name: str = "ground truth") -> dict:
    from napari_trex.core.evaluation import identity_score
    from napari_trex.core.identification.assignment import hidden_positions, identity_coverage
    from napari_trex.core.identification.pipeline import identify
    from napari_trex.core.pipeline import track_video
    from napari_trex.core.results import max_speed_px, trajectory_table
    from napari_trex.core.video import open_video

    video = open_video(path)
    t0 = time.perf_counter()
    run = track_video(video, settings, scheduler="threads")
    t_track = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = identify(run, video, settings, progress=lambda e: (
        e["stage"] not in ("images", "epoch") or (SHOW_EPOCHS and e["stage"] == "epoch"))
        and print("   ", e["message"].strip(), flush=True), start_from=START_FROM)
    t_ident = time.perf_counter() - t0
    hidden = hidden_positions(run.result, result.identities, run.n_individuals, run.fps, max_speed_px(run))
    coverage = identity_coverage(run.result, result.identities, run.n_individuals, hidden)
    sources = ", ".join(f"{k} {v:.2%}" for k, v in coverage.items() if k != "all" and v > 0)
    print(f"{label}: {len(video)} frames, {run.n_individuals} animals, device {result.device}; "
          f"{len(run.segments)} global segments, started from "
          f"{result.steps[0].get('start', 'global segment') if result.steps else '-'}")
    print(f"  tracking {t_track:.0f} s, identification {t_ident:.0f} s, total {t_track + t_ident:.0f} s; "
          f"peak RSS {rss_mb():.0f} MB")
    print(f"  final uniqueness {result.uniqueness:.4f} (with the parts of split blobs: "
          f"{result.uniqueness_with_parts:.4f}; all measured frames, as TRex counts: "
          f"{result.uniqueness_all_frames:.4f}); N x frames with an identity "
          f"{coverage['all']:.2%} ({sources})")
    out = {"case": label, "track_s": t_track, "identify_s": t_ident, "uniqueness": result.uniqueness,
           "uniqueness_trex": result.uniqueness_all_frames,
           "identified": coverage["all"]}
    if truth is not None:
        table = trajectory_table(run, result.identities, hidden=True)  # as trajectories.csv
        score = identity_score(table["frame"], table["identity"], table["x"], table["y"], truth, distance)
        print(f"  {truth_name}: {score.share_right:.3%} of {score.total} animal-frames right "
              f"({score.wrong} wrong, {score.missing} missing)")
        out["right"] = score.share_right
    return out


def main() -> int:
    from napari_trex.core.datasets import generate, read_ground_truth, sample_video
    from napari_trex.core.settings import Settings, parse_assignments

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--workdir", help="where generated videos are cached (default: a temp dir)")
    parser.add_argument("--only", help="comma-separated cases: realistic, crowded10, crowded20, sample, flies, "
                        "test_A, test_B")
    parser.add_argument("--seeds", default="1,2", help="seeds of the realistic videos and the fly runs")
    parser.add_argument("--epochs", action="store_true", help="print every epoch too")
    parser.add_argument("--start", choices=("automatic", "pairs"), default="automatic",
                        help="pairs: start from tracklet pairs even where a global segment exists "
                        "(to compare the two paths)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for every case (e.g. gpu_learning_rate=0.001)")
    args = parser.parse_args()
    global SHOW_EPOCHS, START_FROM
    SHOW_EPOCHS, START_FROM = args.epochs, args.start
    only = set(args.only.split(",")) if args.only else None
    seeds = [int(s) for s in args.seeds.split(",")]
    extra = parse_assignments(args.set)  # as the command line reads them (false is False)

    def settings(**values) -> Settings:
        """A case's settings, with --set on top."""
        return Settings().updated(**{**values, **extra})
    work = Path(args.workdir or tempfile.mkdtemp(prefix="napari-trex-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []

    def wanted(case: str) -> bool:
        return only is None or case in only

    if wanted("realistic"):
        for seed in seeds:
            path = work / f"realistic_8x3000_seed{seed}.mp4"
            if not path.exists():
                generate(n_individuals=8, n_frames=3000, seed=seed, realistic=True).write(path)
            truth = read_ground_truth(path.with_name(f"{path.stem}_ground_truth.csv"))
            rows.append(run_one(path, settings(track_max_individuals=8, track_max_speed=30.0),
                                truth, f"realistic 8x3000 seed {seed}"))
    for n_animals, body in ((10, 40.0), (20, 28.0)):
        # groups that touch so often that no moment shows all of them apart (no global
        # segment): identification learns from tracklet pairs
        case = f"crowded{n_animals}"
        if not wanted(case):
            continue
        for seed in seeds:
            path = work / f"crowded_{n_animals}x3000_seed{seed}.mp4"
            if not path.exists():
                generate(n_individuals=n_animals, n_frames=3000, seed=seed, realistic=True,
                         body_length=body, sociality=0.6).write(path)
            truth = read_ground_truth(path.with_name(f"{path.stem}_ground_truth.csv"))
            rows.append(run_one(path, settings(track_max_individuals=n_animals, track_max_speed=30.0),
                                truth, f"crowded {n_animals}x3000 seed {seed}"))
    if wanted("sample"):
        path, truth_path = sample_video(folder=work)
        rows.append(run_one(path, settings(track_max_individuals=4, track_max_speed=30.0),
                            read_ground_truth(truth_path), "bundled sample 4x500"))
    if not SHARED.is_dir() and any(wanted(name) for name in ("flies", "test_A", "test_B")):
        print(f"  the real recordings (flies, test_A, test_B) are not here: {SHARED} is missing",
              flush=True)
    if SHARED.is_dir():
        from track_shared_data import VIDEOS, reference_table  # the documented settings of each recording

        def documented(name: str, **more):
            return settings(cm_per_pixel=1.0, auto_minmax_size=True, **VIDEOS[name][1], **more)

        flies = SHARED / "sleap_flies_clip"
        if wanted("flies") and flies.is_dir():
            gt = reference_table(flies / "gt.csv")
            for seed in seeds:
                rows.append(run_one(SHARED / VIDEOS["flies"][0], documented("flies", seed=seed), gt,
                                    f"flies seed {seed}", distance=25.0))
        for name in ("test_A", "test_B"):
            if wanted(name):
                # idtracker.ai's tracks: a tool baseline, not ground truth ("right" = agreement)
                reference = SHARED / VIDEOS[name][0]
                reference = reference.with_name(f"reference_idtrackerai_{name}.csv")
                baseline = reference_table(reference) if reference.exists() else None
                rows.append(run_one(SHARED / VIDEOS[name][0], documented(name), baseline,
                                    f"zebrafish {name}", distance=20.0, truth_name="idtracker.ai"))
    print("\n| case | right (missing = wrong) | N x frames identified | uniqueness (TRex's) | tracking | "
          "identification |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        right = f"{r['right']:.2%}" if "right" in r else "-"
        print(f"| {r['case']} | {right} | {r['identified']:.2%} | {r['uniqueness']:.3f} ({r['uniqueness_trex']:.3f}) | "
              f"{r['track_s']:.0f} s | {r['identify_s']:.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
