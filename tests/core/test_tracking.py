"""Tracking cuts the video into tracklets that never mix two animals (the base of identification)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_trex.core.datasets import generate
from napari_trex.core.detection import split_blob, split_blob_fill
from napari_trex.core.errors import Cancelled, NapariTrexError
from napari_trex.core.evaluation import score_tracklets
from napari_trex.core.pipeline import track_video
from napari_trex.core.settings import Settings
from napari_trex.core.tracklets import (
    MERGED, NO_BLOB, LOST_FOR_ONE_FRAME, WEIRD_DISTANCE, reason_names, tracklet_matrix)
from napari_trex.core.video import ArrayVideo

from helpers import disk_frames, resting_pair


def _run(synthetic, **settings):
    values = {"track_max_individuals": synthetic.n_individuals, "track_max_speed": 30.0}
    values.update(settings)
    return track_video(ArrayVideo(synthetic.frames, synthetic.fps), Settings().updated(**values))


def _score(run, synthetic):
    det = run.result.detections
    return score_tracklets(run.result.assignment, run.result.tracklet_of, det["x"], det["y"],
                           det["frame"], synthetic.ground_truth, synthetic.body_length / 2)


@pytest.mark.parametrize(("n", "seed"), [(8, 2), (8, 11), (4, 3), (4, 7)])
def test_no_tracklet_mixes_two_animals_and_nearly_all_are_tracked(n, seed):
    synthetic = generate(n_individuals=n, n_frames=600, seed=seed)
    run = _run(synthetic)
    score = _score(run, synthetic)
    assert score.mixed == [], f"tracklets {score.mixed} contain two animals"
    assert score.coverage >= 0.97
    assert len(run.segments) >= 1


def test_global_segments_hold_every_animal_in_one_tracklet_and_are_ranked_by_quality():
    synthetic = generate(n_individuals=4, n_frames=400, seed=5)
    run = _run(synthetic)
    ids = tracklet_matrix(run.result.assignment, run.result.tracklets)
    seg = run.segments
    assert len(seg) >= 1
    for a, b in zip(seg.start, seg.end):
        block = ids[a: b + 1]
        assert (block >= 0).all() and (block == block[0]).all()
        assert (run.result.assignment[a: b + 1] >= 0).all()
    order = np.argsort(seg.rank)
    quality = list(zip(seg.min_cells[order], seg.average_samples[order]))
    assert quality == sorted(quality, reverse=True)
    best = seg.best()
    assert best == (int(seg.start[order[0]]), int(seg.end[order[0]]))


# -- constructed cases: one or two disks moving on a dark background, px units (cm_per_pixel=1)


def _disk_video(paths: list[list[tuple[float, float] | None]], size=128, radius=5, value=200):
    frames = np.full((len(paths), size, size), 20, np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    for t, animals in enumerate(paths):
        for pos in animals:
            if pos is not None:
                frames[t][(xx - pos[0]) ** 2 + (yy - pos[1]) ** 2 <= radius ** 2] = value
    return ArrayVideo(frames, fps=10)


def _constructed_settings(n):
    return Settings().updated(track_max_individuals=n, cm_per_pixel=1.0, blob_size_ranges=[[40, 120]],
                              track_max_speed=100.0, average_samples=200, averaging_method="min")


def _ends(run, slot):
    t = run.result.tracklets
    return [(int(s), int(e), reason_names(int(r))) for s, e, r, i in
            zip(t.start, t.end, t.end_reason, t.individual) if i == slot]


def test_a_jump_above_track_max_speed_ends_the_tracklet():
    # 9 px per frame at 10 fps = 90 px/s, close to track_max_speed (100 px/s); then one step
    # of 11 px (110 px/s): still the likely match, but faster than the animal can move
    xs = [20 + 9 * t for t in range(12)]
    xs += [xs[-1] + 11] + [xs[-1] + 11 + 9 * t for t in range(1, 8)]
    run = track_video(_disk_video([[(x, 64.0)] for x in xs], size=256), _constructed_settings(1))
    # (a fast start has no velocity yet: TRex-like, the first frames may be lost)
    assert (run.result.assignment[6:, 0] >= 0).all()  # tracked through the jump ...
    before, after = run.result.tracklet_of[11, 0], run.result.tracklet_of[12, 0]
    assert before != after  # ... but in a new tracklet from the jump on
    code = int(run.result.tracklets.end_reason[before])
    assert code & WEIRD_DISTANCE, reason_names(code)


def test_a_lost_animal_ends_the_tracklet_with_no_blob():
    path = [[(20 + 2 * t, 64.0)] for t in range(15)] + [[None]] * 3 + \
           [[(56 + 2 * t, 64.0)] for t in range(12)]
    run = track_video(_disk_video(path), _constructed_settings(1))
    first = run.result.tracklet_of[14, 0]
    code = int(run.result.tracklets.end_reason[first])
    assert code & LOST_FOR_ONE_FRAME and code & NO_BLOB, reason_names(code)
    assert int(run.result.tracklets.end[first]) == 14


def test_a_merge_that_cannot_be_split_ends_both_tracklets():
    # two disks approach, overlap completely (one blob, nothing to split), then part
    path = []
    for t in range(40):
        offset = abs(20 - t) * 2.0
        path.append([(64 - offset, 64.0), (64 + offset, 64.0)])
    run = track_video(_disk_video(path), _constructed_settings(2))
    merged = [reason_names(int(c)) for c in run.result.tracklets.end_reason if c & MERGED]
    assert len(merged) >= 2
    assert (run.result.assignment[20] < 0).all()  # nobody gets the merged blob


# -- splitting merged blobs


def _two_touching_animals():
    """Difference image of two ellipses side by side, darkest along their midlines."""
    yy, xx = np.mgrid[0:40, 0:60].astype(float)
    crop = np.zeros((40, 60))
    for cx in (22.0, 38.0):
        r = np.sqrt(((xx - cx) / 9) ** 2 + ((yy - 20) / 16) ** 2)
        crop = np.maximum(crop, np.clip(1 - r, 0, 1) * 120)
    return np.where(crop > 15, crop, 0).astype(np.uint8)


def test_merged_blob_splits_into_whole_animals_by_raising_the_threshold():
    parts = split_blob(_two_touching_animals(), top=100, left=200, k=2, threshold=15)
    assert parts is not None and parts["split"].all()
    xs = np.sort(parts["x"])
    assert np.allclose(xs, [222, 238], atol=1.5) and np.allclose(parts["y"], 120, atol=1.5)
    assert parts["area"].sum() == (_two_touching_animals() > 0).sum()  # grown back, nothing lost


def test_split_from_predicted_positions():
    parts = split_blob_fill(_two_touching_animals(), 0, 0, np.array([[21.0, 20.0], [39.0, 21.0]]))
    assert parts is not None
    assert parts["x"][0] < 30 < parts["x"][1]


def test_a_prediction_off_its_animals_middle_still_gets_the_whole_animal():
    # two animals 14 px apart (one convex blob), the predictions 5 px and 10 px off their
    # middles: a watershed from them gave the second a speck of 11 px and the first 658 px
    yy, xx = np.mgrid[0:40, 0:60].astype(float)
    crop = np.zeros((40, 60))
    for cx in (22.0, 36.0):
        crop = np.maximum(crop, np.clip(1 - np.hypot((xx - cx) / 9, (yy - 20) / 16), 0, 1) * 120)
    crop = np.where(crop > 15, crop, 0).astype(np.uint8)
    parts = split_blob_fill(crop, 100, 200, np.array([[227.0, 120.0], [238.0, 130.0]]))
    assert parts is not None
    assert np.allclose(parts["x"], [222, 236], atol=1.5) and np.allclose(parts["y"], 120, atol=1.5)
    assert parts["area"].min() > 0.45 * (crop > 0).sum()


def test_the_split_from_predictions_divides_a_blob_as_scipys_kmeans_does():
    # the k-means that stops when no pixel changes side must give kmeans2's ten rounds' answer,
    # a seed that ends with no pixel included (then the blob is not split)
    from scipy.cluster.vq import ClusterError, kmeans2

    from napari_trex.core.detection import _kmeans

    rng = np.random.default_rng(0)
    refused = 0
    for _ in range(300):
        k = int(rng.integers(2, 5))
        middles = rng.uniform(0, 60, (k, 2))
        pixels = np.concatenate([m + rng.normal(0, rng.uniform(2, 12), (int(rng.integers(5, 300)), 2))
                                 for m in middles]).round()
        seeds = middles + rng.normal(0, 15, (k, 2))
        try:
            expected = kmeans2(pixels, seeds, iter=10, minit="matrix", missing="raise")[1]
        except ClusterError:
            expected = None
        got = _kmeans(pixels, seeds)
        if expected is None:
            refused += 1
            assert got is None
        else:
            assert got is not None and np.array_equal(got, expected)
    assert 0 < refused < 100  # both outcomes were exercised


# -- polarity, automatic parameters, callbacks


@pytest.mark.parametrize("polarity", ["dark_on_light", "light_on_dark"])
def test_light_and_dark_animals_are_both_tracked(polarity):
    synthetic = generate(n_individuals=3, n_frames=200, seed=1, polarity=polarity)
    run = _run(synthetic)
    score = _score(run, synthetic)
    assert score.mixed == [] and score.coverage >= 0.95


def test_number_of_animals_and_size_range_are_estimated_when_left_at_zero():
    synthetic = generate(n_individuals=5, n_frames=300, seed=4)
    run = _run(synthetic, track_max_individuals=0)
    assert run.auto.n_individuals == 5 and run.n_individuals == 5
    (lo, hi), = run.auto.blob_size_ranges
    px = run.settings.pixel_size_cm(512) ** 2
    single = np.median(run.detections["area"])
    assert lo / px < single < hi / px
    assert 0.8 * single < run.auto.reference_area_px < 1.2 * single
    assert any("track_max_individuals = 5" in line for line in run.auto.describe())


def test_progress_is_reported_and_cancel_stops_the_run():
    synthetic = generate(n_individuals=2, n_frames=120, size=256, seed=1)
    seen = []
    _run_with = dict(progress=lambda done, total, message: seen.append((message, done, total)))
    track_video(ArrayVideo(synthetic.frames, 25), Settings().updated(track_max_individuals=2), **_run_with)
    stages = [m for m, _, _ in seen]
    assert "detecting animals" in stages and "tracking" in stages
    assert seen[-1][1] == seen[-1][2]
    with pytest.raises(Cancelled):
        track_video(ArrayVideo(synthetic.frames, 25), Settings().updated(track_max_individuals=2),
                    should_stop=lambda: True)


@pytest.mark.parametrize("other, n_frames", [("processes", 60), ("synchronous", 90)],
                         ids=["detection over processes", "tracking after detection"])
def test_every_scheduler_gives_the_tracking_that_follows_detection_in_threads(other, n_frames):
    """Detection in processes, or tracking once detection is complete, changes nothing."""
    synthetic = generate(n_individuals=3, n_frames=n_frames, size=256, seed=2)
    video = ArrayVideo(synthetic.frames, 25)
    settings = Settings().updated(track_max_individuals=3)
    streamed = track_video(video, settings, scheduler="threads", chunk_frames=20)
    after = track_video(video, settings, scheduler=other, chunk_frames=20)
    assert np.array_equal(streamed.result.assignment, after.result.assignment)
    assert np.array_equal(streamed.detections["x"], after.detections["x"])


def test_detection_on_a_dask_distributed_cluster_matches_threads():
    distributed = pytest.importorskip("distributed")  # the 'cluster' extra; CI installs it
    synthetic = generate(n_individuals=3, n_frames=60, size=256, seed=2)
    video = ArrayVideo(synthetic.frames, 25)
    settings = Settings().updated(track_max_individuals=3)
    local = track_video(video, settings, scheduler="threads", chunk_frames=20)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        remote = track_video(video, settings, scheduler=cluster.scheduler_address, chunk_frames=20)
    assert np.array_equal(local.detections["x"], remote.detections["x"])
    assert np.array_equal(local.result.assignment, remote.result.assignment)


def test_unreachable_cluster_is_a_clear_error():
    synthetic = generate(n_individuals=1, n_frames=10, size=128, seed=2, body_length=16)
    with pytest.raises(NapariTrexError, match="dask"):
        track_video(ArrayVideo(synthetic.frames, 25), Settings().updated(track_max_individuals=1),
                    scheduler="tcp://127.0.0.1:9")


# -- what real recordings do: posture, resting, contacts, restarts (the realistic generator)


@pytest.mark.parametrize("seed", [2, 4])
def test_realistic_animals_stay_in_clean_long_tracklets(seed):
    synthetic = generate(n_individuals=4, n_frames=400, seed=seed, realistic=True)
    contact = synthetic.contact()
    assert contact.any(axis=1).mean() > 0.05  # they do touch ...
    run = _run(synthetic)
    det = run.result.detections
    from napari_trex.core.evaluation import tracklet_report

    report = tracklet_report(run, synthetic.ground_truth, synthetic.body_length / 2)
    assert report.mixed == []  # ... and no tracklet carries two animals out of a contact
    assert report.coverage >= 0.98
    assert report.one_frame_without_contact == 0
    assert report.n50 >= 100
    assert report.end_reasons.get("NoBlob", 0) <= 2 and len(det["x"]) > 0


def test_animals_resting_in_contact_are_followed_through_it_not_cut_frame_by_frame():
    # seed 6: two animals lie against each other for seconds. Cut anew every frame by raising
    # the threshold, the seam wavered and most frames of the contact were one-frame tracklets
    # (0.32 of the split frames in tracklets of 5+); divided between where each slot predicts
    # its animal while they stay put, each part stays on its animal and the tracklets go on
    # through the still stretches of the contact (0.49). Resting animals jitter (posture, and
    # the division shifts by a pixel or two): a rest that ended at a jitter of a tenth of the
    # animal's size fell back to the wavering seam (0.49 -> 0.55 with LASTING_STILL 0.3)
    synthetic = generate(n_individuals=4, n_frames=400, seed=6, realistic=True)
    run = _run(synthetic)
    result = run.result
    frames, slots = np.nonzero(result.assignment >= 0)
    parts = result.detections["split"][result.assignment[frames, slots]]
    lengths = result.tracklets.length[result.tracklet_of[frames, slots]]
    assert parts.sum() > 100  # a long contact ...
    assert (lengths[parts] >= 5).mean() >= 0.53  # ... followed in tracklets, not frame by frame
    assert _score(run, synthetic).mixed == []  # ... and none carries two animals


def test_an_animal_that_spreads_its_wings_keeps_its_tracklet():
    # two animals far apart; one grows by 45 % for a while (wings, posture): not a merge
    frames = np.full((60, 128, 128), 20, np.uint8)
    yy, xx = np.mgrid[0:128, 0:128]
    for t in range(60):
        r = 6 if 20 <= t < 35 else 5
        frames[t][(xx - (20 + t)) ** 2 + (yy - 30) ** 2 <= r ** 2] = 200
        frames[t][(xx - (100 - t)) ** 2 + (yy - 100) ** 2 <= 25] = 200
    run = track_video(ArrayVideo(frames, fps=10), _constructed_settings(2))
    assert len(run.result.tracklets) == 2, [reason_names(int(c)) for c in run.result.tracklets.end_reason]
    assert (run.result.assignment >= 0).all()


def test_an_animal_back_after_a_short_loss_is_one_tracklet_again_not_many():
    # fast (60 px/s of 100), lost for 3 frames, back: TRex's time term made every frame after a
    # restart 'ProbabilityTooSmall'
    path = [[(10 + 6 * t, 64.0)] for t in range(12)] + [[None]] * 3 + \
           [[(10 + 6 * t, 64.0)] for t in range(15, 35)]
    run = track_video(_disk_video(path, size=256), _constructed_settings(1))
    t = run.result.tracklets
    assert len(t) == 2 and int(t.start[1]) == 15 and int(t.end[1]) == 34
    assert int(t.end_reason[0]) & LOST_FOR_ONE_FRAME


def test_an_animal_joining_a_group_does_not_take_its_neighbours_blob():
    # three animals lie in a row (one blob); a fourth walks up and joins them at the end of the
    # row, next to a fifth resting beside it. As it joins, the group's centre is farther from
    # it than the neighbour's: its prediction lies on the group's pixels, so that is its blob,
    # and the neighbour's blob is not taken for a merge (its tracklet used to end there)
    path = [[None]] * 4  # an empty arena first: the background is the arena, not the resting ones
    for t in range(24):
        path.append([(20.0, 64.0), (30.0, 64.0), (40.0, 64.0), (max(50.0, 80 - 3.0 * t), 64.0),
                     (52.0, 76.0)])
    run = track_video(_disk_video(path), _constructed_settings(5))
    last = run.result.assignment[27]
    neighbour = [slot for slot in range(5) if last[slot] >= 0 and
                 abs(run.result.detections["y"][last[slot]] - 76) < 3]
    assert len(neighbour) == 1
    assert _ends(run, neighbour[0]) == [(4, 27, "EndOfVideo")]
    walker = [slot for slot in range(5) if _ends(run, slot) and slot != neighbour[0]]
    assert [e[1] for e in _ends(run, walker[0])] == [13]  # it joined the group in frame 14


def test_more_animals_than_track_max_individuals_are_reported():
    path = [[(20 + t, 30.0), (100 - t, 64.0), (64.0, 20 + t)] for t in range(40)]
    run = track_video(_disk_video(path), _constructed_settings(2))
    assert any("track_max_individuals = 2" in w and "more animals" in w for w in run.auto.warnings)


def test_animals_larger_than_blob_size_ranges_are_reported_as_such_not_as_extra_animals():
    # a user sets cm_per_pixel = 1 and keeps the default blob_size_ranges [0.1, 3] cm²: the
    # animals (~80 px) fall outside, while specks of sensor noise fit the range and outnumber them
    path = [[(20 + t, 30.0), (100 - t, 64.0)] for t in range(40)]
    video = _disk_video(path)
    rng = np.random.default_rng(0)
    for frame in video.array:
        frame[rng.integers(0, 128, 6), rng.integers(0, 128, 6)] = 200
    run = track_video(video, _constructed_settings(2).updated(blob_size_ranges=[[0.1, 3.0]]))
    assert any("larger than blob_size_ranges" in w and "cm_per_pixel" in w for w in run.auto.warnings)
    assert not any("more animals" in w for w in run.auto.warnings)


def test_a_resting_animal_is_tracked_all_along():
    # one animal rests for 80 % of the video (TRex's mode background would swallow it)
    path = [[(20.0, 20.0) if t < 80 else (20.0 + (t - 80), 20.0), (20 + abs(50 - t), 100.0)]
            for t in range(100)]
    settings = _constructed_settings(2).updated(averaging_method="mode")
    run = track_video(_disk_video(path), settings)
    assert (run.result.assignment >= 0).mean() >= 0.98
    assert len(run.result.tracklets) == 2  # neither ever lost


def test_two_animals_resting_side_by_side_keep_their_tracklets():
    # they walk up to each other, touch (one blob) for 2 s, then part: each part of the split
    # blob is a whole animal at its predicted place, so the tracklets go on through the contact
    path = []
    for t in range(60):
        gap = max(0.0, abs(30 - t) - 10) * 1.5  # touching for frames 20..40
        path.append([(64 - 5.5 - gap, 64.0), (64 + 5.5 + gap, 64.0)])
    run = track_video(_disk_video(path), _constructed_settings(2))
    assert (run.result.assignment[20:41] >= 0).all()  # both tracked while touching
    ids = run.result.tracklet_of
    assert len(np.unique(ids[:, 0])) <= 2 and len(np.unique(ids[:, 1])) <= 2
    x = run.result.detections["x"][run.result.assignment]
    assert (x[:, 0] < 64).all() == (x[0, 0] < 64) and (np.sign(x[:, 1] - 64) == np.sign(x[0, 1] - 64)).all()


def test_one_doubtful_frame_in_a_contact_does_not_cut_the_rest_of_it_into_one_frame_tracklets():
    # two animals touch (one blob, split cleanly) for frames 15..45; in frame 25 one of them
    # swells (posture): that frame's parts are doubtful and end both tracklets. From frame 26
    # the parts are clean again, each where its animal was: one new tracklet each, through the
    # rest of the contact (it used to be a one-frame tracklet per frame until the contact ended)
    run = track_video(ArrayVideo(disk_frames(resting_pair()), fps=10), _constructed_settings(2))
    assert run.result.detections["split"][run.result.assignment[16:45]].all()  # a real contact
    for slot in (0, 1):
        ends = _ends(run, slot)
        assert any(start == 25 == end for start, end, _ in ends), ends  # the doubtful frame alone
        assert (26, 59, "EndOfVideo") in ends, ends
    x = run.result.detections["x"][run.result.assignment]
    assert (x[:, 0] < x[:, 1]).all()  # and nobody swapped


def test_an_animal_still_swollen_after_a_contact_keeps_one_tracklet_once_the_other_is_gone():
    # A and B touch (one blob, split) for frames 14..30; then B is out of sight and A, swollen
    # (posture: 1.4x its area), walks away. B's slot, lost, could still reach A's blob but does
    # not predict B on it: no evidence that B hides in it, so A's blob is A alone and its
    # tracklet goes on (a lost animal within reach made every frame a one-frame tracklet)
    path = []
    for t in range(60):
        gap = max(0.0, abs(22 - t) - 8) * 1.5
        ax = 64 - 4.5 - gap if t <= 30 else 64 - 4.5 - (t - 30)
        path.append([(ax, 64.0, 6.0 if 31 <= t < 45 else 5.0)]
                    + ([(64 + 4.5 + gap, 64.0, 5.0)] if t <= 30 else []))
    settings = _constructed_settings(2).updated(track_max_speed=300.0)
    run = track_video(ArrayVideo(disk_frames(path), fps=25), settings)
    assert run.result.detections["split"][run.result.assignment[20]].all()  # a real contact
    slot = int(np.argmin(run.result.detections["x"][run.result.assignment[5]]))
    ends = _ends(run, slot)
    assert (32, 59, "EndOfVideo") in ends, ends
    assert not [e for e in ends if e[0] > 30 and e[0] == e[1]], ends


def test_a_part_next_to_where_a_missing_animal_was_last_seen_is_not_trusted():
    from napari_trex.core.tracking import LOST_NEARBY, _lost_near

    size = 20.0  # an animal of 400 px
    lost = np.array([[100.0, 100.0], [300.0, 300.0]])
    assert _lost_near(np.array([100.0 + 0.9 * LOST_NEARBY * size, 100.0]), lost, size ** 2)
    assert not _lost_near(np.array([100.0 + 1.1 * LOST_NEARBY * size, 100.0]), lost, size ** 2)
    assert not _lost_near(np.array([100.0, 100.0]), np.empty((0, 2)), size ** 2)


def test_animals_whose_blobs_merge_without_touching_count_as_an_event():
    # two animals 3 px apart, bridged at the threshold (blur, compression): one blob, although
    # their silhouettes do not touch; a third animal far away has its own blob
    from napari_trex.core.detection import DetectionParams, Detections, detect_frame
    from napari_trex.core.evaluation import merged_in_detection

    frames = disk_frames([[(40.0, 64.0, 8.0), (59.0, 64.0, 8.0), (100.0, 30.0, 8.0)]] * 2)
    frames[0, 63:66, 47:52] = 200  # the bridge, in frame 0 only
    params = DetectionParams(threshold=60, size_ranges_px=((20, 1000),), prefilter_px=(5, np.inf),
                             keep_pixels_above_px=300)
    background = np.full((128, 128), 20, np.uint8)
    found = [detect_frame(f, background, params, t) for t, f in enumerate(frames)]
    detections = Detections.from_frames([f[0] for f in found], [f[1] for f in found])
    truth = {"frame": np.repeat([0, 1], 3), "identity": np.tile([0, 1, 2], 2),
             "x": np.tile([40.0, 59.0, 100.0], 2), "y": np.tile([64.0, 64.0, 30.0], 2)}
    merged = merged_in_detection(detections, truth, 2, 3)
    assert merged.tolist() == [[True, True, False], [False, False, False]]


def test_each_slots_typical_size_is_the_median_of_its_known_areas():
    from napari_trex.core.tracking import _median_areas

    rng = np.random.default_rng(3)
    history = rng.uniform(100, 400, (6, 10))
    for slot, known in enumerate([10, 7, 4, 1, 0, 2]):  # a slot's history fills from the right
        history[slot, : 10 - known] = np.nan
    got = _median_areas(history)
    for slot in range(6):
        values = history[slot][np.isfinite(history[slot])]
        if len(values):
            assert got[slot] == np.median(values)
    assert np.isnan(got[4])


def test_animals_partly_above_blob_size_ranges_are_told_what_happens_to_them():
    # two animals of different sizes, the larger just above the top of blob_size_ranges: the
    # warning says how many lie outside and that they are still followed (as they are), not
    # that the animals are not tracked
    frames = np.full((40, 128, 128), 20, np.uint8)
    yy, xx = np.mgrid[0:128, 0:128]
    for t in range(40):
        for (x, y), radius in (((20 + t, 30.0), 5.0), ((100 - t, 90.0), 5.6)):
            frames[t][(xx - x) ** 2 + (yy - y) ** 2 <= radius ** 2] = 200
    r2 = (xx - 64) ** 2 + (yy - 64) ** 2
    small, large = int((r2 <= 5.0 ** 2).sum()), int((r2 <= 5.6 ** 2).sum())
    top = (small + large) / 2 - 1  # the small one fits, the large one does not, the median does not
    assert small <= top < large
    settings = _constructed_settings(2).updated(blob_size_ranges=[[40, top]])
    run = track_video(ArrayVideo(frames, fps=10), settings)
    warning = next(w for w in run.auto.warnings if "larger than blob_size_ranges" in w)
    assert "50% of them lie outside it" in warning and "still followed" in warning
    assert "not tracked" not in warning
    assert (run.result.assignment >= 0).all(axis=1).mean() > 0.9  # both animals, nearly every frame


def test_an_animal_back_inside_a_group_gets_a_part_of_its_own():
    # two animals rest against each other; a third walks up, is lost for 0.8 s and comes
    # back lying against them: one blob that its two neighbours' slots claim. It holds
    # room for a third animal, so it is cut into three, and the lost slot takes its animal up
    # again (cut into two, the third animal was hidden in its neighbour's part)
    path = [[None]] * 4  # an empty arena first: the background is the arena
    for t in range(40):
        walker = (110.0 - 3 * t, 64.0) if t < 10 else None if t < 18 else (58.0, 64.0)
        path.append([(min(40.0, 25.0 + t), 64.0), (max(49.0, 64.0 - t), 64.0), walker])
    run = track_video(_disk_video(path), _constructed_settings(3))
    det, assignment = run.result.detections, run.result.assignment
    for t in range(4 + 19, 4 + 40):
        rows = assignment[t][assignment[t] >= 0]
        assert len(rows) == 3, f"frame {t}: {len(rows)} animals tracked"
        assert np.min(np.hypot(det["x"][rows] - 58.0, det["y"][rows] - 64.0)) < 2.5
    assert _score_positions(run, path) == []


def _score_positions(run, path):
    """Frames where a slot's blob lies on no animal of ``path`` (within 3 px)."""
    det, assignment = run.result.detections, run.result.assignment
    off = []
    for t, animals in enumerate(path):
        here = np.array([a for a in animals if a is not None]).reshape(-1, 2)
        for row in assignment[t][assignment[t] >= 0]:
            if not len(here) or np.min(np.hypot(*(here - [det["x"][row], det["y"][row]]).T)) > 3:
                off.append(t)
    return off


def test_a_max_speed_far_above_how_animals_move_is_named_with_a_speed_that_works():
    # track_max_speed in cm/s against a guessed cm_per_pixel can mean hundreds of px per frame:
    # every match is then ambiguous and every tracklet one frame long
    import re

    video = ArrayVideo(generate(n_individuals=3, n_frames=120, seed=4).frames, 25)
    base = Settings().updated(track_max_individuals=3)
    cut_up = track_video(video, base.updated(track_max_speed=1e5))
    assert (cut_up.result.tracklets.length <= 2).mean() > 0.9
    warning = next(w for w in cut_up.auto.warnings if "track_max_speed" in w)
    assert "ambiguous" in warning and "calibrate cm_per_pixel" in warning
    suggested = float(re.search(r"Set track_max_speed to about ([0-9.e+]+) cm/s", warning).group(1))
    assert suggested < 1e5 / 100
    # the suggested speed tracks the animals: long tracklets, a global segment, no warning
    fixed = track_video(video, base.updated(track_max_speed=suggested))
    assert not [w for w in fixed.auto.warnings if "track_max_speed" in w]
    assert np.median(fixed.result.tracklets.length) > 20 and len(fixed.segments) >= 1


def test_a_max_speed_below_how_fast_animals_move_is_named_with_a_speed_that_works():
    # the default 10 cm/s against a guessed cm_per_pixel: zebrafish dart at twice that
    import re

    video = ArrayVideo(generate(n_individuals=3, n_frames=120, seed=4).frames, 25)
    base = Settings().updated(track_max_individuals=3)
    slow = track_video(video, base.updated(track_max_speed=0.3))
    warning = next(w for w in slow.auto.warnings if "track_max_speed" in w)
    assert "moved at track_max_speed" in warning
    suggested = float(re.search(r"Set track_max_speed to about ([0-9.e+]+) cm/s", warning).group(1))
    assert suggested > 0.3 * 1.5
    fixed = track_video(video, base.updated(track_max_speed=suggested))
    assert not [w for w in fixed.auto.warnings if "track_max_speed" in w]
    assert len(fixed.result.tracklets) < len(slow.result.tracklets) / 3
    assert np.median(fixed.result.tracklets.length) > 20 and len(fixed.segments) >= 1
