"""Tracking results as napari layer data and panel tables, without a viewer."""

from __future__ import annotations

import numpy as np
import pytest

from napari_trex.core.datasets import generate
from napari_trex.core.identification.assignment import TrackletIdentities
from napari_trex.core.pipeline import track_video
from napari_trex.core.settings import Settings
from napari_trex.core.video import ArrayVideo
from napari_trex.napari.layers import (identity_colormap, identity_colour_key, identity_palette,
                                       identity_rgba, points_layer_data, tracks_layer_data)
from napari_trex.napari.models import dataset_rows, segment_at, timeline


@pytest.fixture(scope="module")
def run():
    synthetic = generate(n_individuals=3, n_frames=120, seed=4)
    return track_video(ArrayVideo(synthetic.frames, 25),
                       Settings().updated(track_max_individuals=3, track_max_speed=30.0))


def fake_identities(run, unidentified=()):
    """Every tracklet gets its slot as identity, except the ``unidentified`` tracklets."""
    t = run.result.tracklets
    n = run.n_individuals
    identity = t.individual.astype(int).copy()
    identity[list(unidentified)] = -1
    vectors = np.full((len(t), n), 0.1)
    vectors[np.arange(len(t)), t.individual] = 0.8
    return TrackletIdentities(identity, np.where(identity >= 0, 0.8, 0.0), np.full(len(t), 5),
                              np.where(identity >= 0, "network", "").astype(object), vectors)


def test_palette_is_stable_and_distinct():
    assert np.array_equal(identity_palette(3), identity_palette(10)[:3])
    assert len({tuple(c) for c in identity_palette(20)}) == 20
    assert tuple(identity_rgba(np.array([-1]), 4)[0]) != tuple(identity_palette(4)[0])


def test_colormap_gives_every_identity_its_palette_colour():
    n = 5
    ids = np.arange(-1, n)
    mapped = identity_colormap(n).map(identity_colour_key(ids, n))
    assert np.allclose(mapped, identity_rgba(ids, n))


def test_tracks_one_track_per_tracklet_with_features(run):
    data, meta, kind = tracks_layer_data(run)
    assert kind == "tracks" and data.shape[1] == 4
    t = run.result.tracklets
    for tid in np.unique(data[:, 0]).astype(int):
        frames = data[data[:, 0] == tid, 1]
        assert frames.min() >= t.start[tid] and frames.max() <= t.end[tid]
        assert np.all(np.diff(frames) > 0)
    f = meta["features"]
    assert all(len(v) == len(data) for v in f.values())
    assert set(f["end_reason"]) <= {"EndOfVideo"} | set("|".join(f["end_reason"]).split("|"))
    # before identification the slot is shown, not claimed as an identity
    assert not f["identified"].any()
    assert np.array_equal(f["identity"], t.individual[data[:, 0].astype(int)])


def test_points_mark_identified_animals_and_unidentified_ones(run):
    gone = [0]
    data, meta, kind = points_layer_data(run, fake_identities(run, unidentified=gone))
    f = meta["features"]
    assert kind == "points" and data.shape[1] == 3 and len(f["label"]) == len(data)
    lost = f["tracklet"] == 0
    assert (f["label"][lost] == "?").all() and (f["text_colour"][lost] == "white").all()
    assert (meta["symbol"][lost] == "ring").all()
    known = f["identified"]
    assert known.any() and (f["text_colour"][known] == "lime").all()
    assert (meta["symbol"][known] == "disc").all()
    assert np.allclose(meta["border_color"][known], identity_rgba(f["identity"][known], 3))


def test_timeline_rows_bars_and_segments(run):
    model = timeline(run)
    assert model.row_labels == ["slot 0", "slot 1", "slot 2"]
    t = run.result.tracklets
    bar = model.bar_at(int(t.individual[0]), float(t.start[0]))
    assert bar is not None and model.tracklet[bar] == t.id[0]
    assert "ended:" in model.describe(bar)
    kinds = [k for _, _, k in model.segments]
    assert kinds.count("best") == 1 and len(kinds) == len(run.segments)
    with_ids = timeline(run, fake_identities(run, unidentified=[0]),
                        trained=[run.segments.best()])
    assert with_ids.row_labels[-1] == "unidentified"
    assert with_ids.row[0] == 3  # the unidentified tracklet sits in the last row


def test_dataset_rows_show_the_averaged_prediction(run):
    best = run.segments.best()
    assert segment_at(run, best[0]) == best and segment_at(run, best[1]) == best
    before = dataset_rows(run, None, best)
    assert len(before) == 3 and all(r["predicted"] == "" for r in before)
    after = dataset_rows(run, fake_identities(run), best)
    for row in after:
        assert row["predicted"] == row["individual"] and row["probability"] == pytest.approx(0.8)
        assert row["frames"] >= best[1] - best[0] + 1
        assert row["travelled_cm"] > 0  # the animals move
