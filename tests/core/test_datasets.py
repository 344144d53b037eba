"""The synthetic sample: seeded, realistic enough to need appearance, and its ground truth is true."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import label, regionprops

from napari_trex.core.datasets import generate, read_ground_truth, sample_video
from napari_trex.core.video import open_video


@pytest.fixture(scope="module")
def synthetic():
    return generate(n_individuals=6, n_frames=150, size=384, seed=7)


def test_same_seed_same_video_other_seed_other_video():
    a = generate(n_individuals=3, n_frames=20, size=128, seed=1, body_length=16)
    b = generate(n_individuals=3, n_frames=20, size=128, seed=1, body_length=16)
    c = generate(n_individuals=3, n_frames=20, size=128, seed=2, body_length=16)
    assert np.array_equal(a.frames, b.frames)
    assert all(np.array_equal(a.ground_truth[k], b.ground_truth[k]) for k in a.ground_truth)
    assert not np.array_equal(a.frames, c.frames)


def test_ground_truth_has_one_row_per_animal_and_frame(synthetic):
    gt = synthetic.ground_truth
    assert set(gt) == {"frame", "identity", "x", "y", "angle", "contact"}
    assert len(gt["frame"]) == 150 * 6
    assert np.array_equal(np.bincount(gt["identity"]), np.full(6, 150))
    assert np.all((gt["x"] > 0) & (gt["x"] < 384) & (gt["y"] > 0) & (gt["y"] < 384))


def _isolated(synthetic, frame, identity, distance):
    pos = synthetic.positions()[frame]
    d = np.hypot(*(pos - pos[identity]).T)
    d[identity] = np.inf
    return d.min() > distance


def test_drawn_animals_are_where_the_ground_truth_says(synthetic):
    gt = synthetic.ground_truth
    checked = 0
    for frame in range(0, 150, 10):
        foreground = np.abs(synthetic.frames[frame].astype(float) - synthetic.background) > 30
        labels = label(foreground)
        props = {p.label: p for p in regionprops(labels)}
        for identity in range(6):
            if not _isolated(synthetic, frame, identity, 2 * synthetic.body_length):
                continue
            row = np.flatnonzero((gt["frame"] == frame) & (gt["identity"] == identity))[0]
            x, y, angle = gt["x"][row], gt["y"][row], gt["angle"][row]
            blob = props[labels[int(round(y)), int(round(x))]]
            cy, cx = blob.centroid
            assert np.hypot(cx - x, cy - y) < 1.0, (frame, identity)
            # the body lies along the heading (skimage: orientation from the row axis)
            axis = np.arctan2(np.cos(blob.orientation), np.sin(blob.orientation))
            off = abs((axis - angle + np.pi / 2) % np.pi - np.pi / 2)
            assert off < 0.25, (frame, identity, off)
            # ... and the heading points at the head: the tail reaches further from the centre
            coords = blob.coords[:, ::-1] - [x, y]
            along = coords @ [np.cos(angle), np.sin(angle)]
            assert -along.min() > along.max(), (frame, identity)
            checked += 1
    assert checked >= 30


def test_individuals_differ_only_in_a_subtle_stable_pattern(synthetic):
    codes = synthetic.codes
    assert len({tuple(c) for c in codes}) == 6
    # same shape and darkness: the blob areas of isolated animals agree within a few percent
    areas = {i: [] for i in range(6)}
    for frame in range(0, 150, 5):
        labels = label(np.abs(synthetic.frames[frame].astype(float) - synthetic.background) > 30)
        pos = synthetic.positions()[frame]
        for i in range(6):
            if _isolated(synthetic, frame, i, 2 * synthetic.body_length):
                areas[i].append((labels == labels[int(round(pos[i, 1])), int(round(pos[i, 0]))]).sum())
    means = np.array([np.mean(a) for a in areas.values() if a])
    assert means.std() / means.mean() < 0.08


def test_animals_cross_and_touch_often():
    video = generate(n_individuals=8, n_frames=400, size=512, seed=3)
    pos = video.positions()
    d = np.linalg.norm(pos[:, :, None] - pos[:, None], axis=-1)
    iu = np.triu_indices(8, 1)
    touching = (d[:, iu[0], iu[1]] < video.body_length).any(axis=1)
    assert touching.mean() > 0.1


def test_light_animals_on_dark_background():
    video = generate(n_individuals=3, n_frames=5, size=256, seed=4, polarity="light_on_dark")
    pos = video.positions()[0]
    frame = video.frames[0].astype(float)
    at_animals = frame[np.round(pos[:, 1]).astype(int), np.round(pos[:, 0]).astype(int)]
    assert np.all(at_animals > np.median(frame) + 30)


def test_sample_video_files_are_generated_once_and_readable(tmp_path):
    video_path, truth_path = sample_video(n_individuals=2, n_frames=30, folder=tmp_path)
    stamp = video_path.stat().st_mtime_ns
    assert sample_video(n_individuals=2, n_frames=30, folder=tmp_path)[0].stat().st_mtime_ns == stamp
    with open_video(video_path) as video:
        assert len(video) == 30 and video.frame_shape == (512, 512)
    truth = read_ground_truth(truth_path)
    assert len(truth["frame"]) == 60 and set(truth["identity"]) == {0, 1}


# -- the realistic mode: what real recordings do to a tracker


@pytest.fixture(scope="module")
def realistic():
    return generate(n_individuals=4, n_frames=400, seed=2, realistic=True)


def _blob_at(frame, background, x, y, threshold=15):
    labels = label(np.abs(frame.astype(float) - background) >= threshold)
    value = labels[int(round(y)), int(round(x))]
    return (labels == value).sum() if value else 0


def test_realistic_animals_differ_in_size_and_change_shape(realistic):
    assert realistic.sizes.max() / realistic.sizes.min() > 1.2
    pos = realistic.positions()
    contact = realistic.contact()
    spread = []
    for i in range(4):
        areas = [_blob_at(realistic.frames[t], realistic.background, *pos[t, i])
                 for t in range(0, 400, 5) if not contact[max(0, t - 2): t + 3, i].any()]
        areas = np.array([a for a in areas if a])
        spread.append(np.percentile(areas, 90) / np.percentile(areas, 10))
    assert max(spread) > 1.25  # posture, wings and legs: an animal's blob is not one size


def test_realistic_animals_rest_and_linger_in_contact(realistic):
    resting = realistic.resting
    runs = [np.diff(np.flatnonzero(np.diff(np.r_[0, resting[:, i].astype(int), 0]))) for i in range(4)]
    longest_rest = max(r[::2].max() if len(r) else 0 for r in runs)
    assert longest_rest >= realistic.fps  # some animal rests for at least a second
    contact = realistic.contact()
    assert contact.any(axis=1).mean() > 0.05
    # the contact column is true: touching animals are close, far ones never touch
    pos = realistic.positions()
    d = np.linalg.norm(pos[:, :, None] - pos[:, None], axis=-1) + np.eye(4)[None] * 1e9
    assert (d.min(axis=2)[contact] < 1.6 * realistic.sizes.max()).all()
    assert not contact[d.min(axis=2) > 2 * realistic.sizes.max()].any()


def test_realistic_light_is_uneven_and_flickers(realistic):
    background = realistic.background
    assert np.percentile(background, 95) - np.percentile(background, 5) > 20
    means = realistic.frames[:, 200:300, 200:300].mean(axis=(1, 2))
    assert means.std() > 0.5  # the light flickers from frame to frame


def test_realistic_mode_is_seeded_for_every_group_size():
    for n, seed in ((1, 1), (6, 7), (12, 2)):
        a = generate(n_individuals=n, n_frames=30, size=256, seed=seed, realistic=True)
        assert a.frames.shape == (30, 256, 256) and len(a.ground_truth["frame"]) == 30 * n
    b = generate(n_individuals=6, n_frames=30, size=256, seed=7, realistic=True)
    c = generate(n_individuals=6, n_frames=30, size=256, seed=7, realistic=True)
    assert np.array_equal(b.frames, c.frames)


@pytest.mark.timeout(300)
def test_a_sociable_crowd_is_never_all_apart_and_tracks_without_a_global_segment():
    from napari_trex.core.pipeline import track_video
    from napari_trex.core.settings import Settings
    from napari_trex.core.video import ArrayVideo

    calm = generate(n_individuals=20, n_frames=200, seed=1, realistic=True)
    crowd = generate(n_individuals=20, n_frames=200, seed=1, realistic=True, sociality=0.6)
    # animals seek each other's contact: far more of them touch at any moment
    assert crowd.contact().mean() > calm.contact().mean() + 0.1
    run = track_video(ArrayVideo(crowd.frames, 25), Settings().updated(
        track_max_individuals=20, track_max_speed=30.0))
    assert len(run.segments) == 0  # what identification from tracklet pairs is for
