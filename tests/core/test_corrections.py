"""A biologist fixing identities: swap, split, remove, undo/redo, review order, and the
corrections surviving a retrack."""

from __future__ import annotations

import numpy as np
import pytest

from napari_trex.core.corrections import REMOVED, Corrections, apply_manual
from napari_trex.core.datasets import generate
from napari_trex.core.errors import NapariTrexError
from napari_trex.core.pipeline import track_video
from napari_trex.core.settings import Settings
from napari_trex.core.tracklets import MANUAL_SPLIT
from napari_trex.core.video import ArrayVideo

SETTINGS = Settings().updated(track_max_individuals=3, track_max_speed=30.0)


@pytest.fixture(scope="module")
def tracked():
    synthetic = generate(n_individuals=3, n_frames=150, seed=4)
    video = ArrayVideo(synthetic.frames, 25)
    return video, track_video(video, SETTINGS)


def long_tracklets(result, k=2):
    t = result.tracklets
    return [int(i) for i in np.argsort(-(t.end - t.start))[:k]]


def overlapping_pair(result):
    """Two long tracklets of different slots that share frames."""
    t = result.tracklets
    for a in np.argsort(-(t.end - t.start)):
        for b in np.argsort(-(t.end - t.start)):
            if t.individual[a] != t.individual[b] and t.start[a] <= t.end[b] and t.start[b] <= t.end[a]:
                return int(a), int(b)
    raise AssertionError("no overlapping tracklets")


def test_reassign_swaps_with_the_animal_that_had_the_identity(tracked):
    _, run = tracked
    c = Corrections.start(run.result, settings=run.settings)
    a, b = overlapping_pair(run.result)
    ia, ib = int(c.identities.identity[a]), int(c.identities.identity[b])
    frame = int(max(run.result.tracklets.start[a], run.result.tracklets.start[b]))
    changed = c.reassign(a, ib, frame)
    assert c.identities.identity[a] == ib and c.identities.identity[b] == ia
    assert set(changed) >= {a, b} and c.edited[a] and c.edited[b]
    assert c.identities.source[a] == "manual"
    # recorded as TRex's manual_matches: {frame: {identity: blob id}}
    assert c.manual_matches[frame][ib] == c.blob_at(a, frame)
    assert c.manual_matches[frame][ia] == c.blob_at(b, frame)


def test_undo_and_redo_restore_every_edit(tracked):
    _, run = tracked
    c = Corrections.start(run.result)
    a, b = overlapping_pair(run.result)
    before = c.identities.identity.copy()
    c.reassign(a, int(c.identities.identity[b]), int(run.result.tracklets.start[a]))
    after = c.identities.identity.copy()
    new = c.split(a, int(run.result.tracklets.start[a]) + 3)
    assert len(c.result.tracklets) == len(run.result.tracklets) + 1
    assert c.undo() and len(c.result.tracklets) == len(run.result.tracklets)
    assert np.array_equal(c.identities.identity, after)
    assert c.undo() and np.array_equal(c.identities.identity, before)
    assert not c.manual_matches and not c.edited.any() and not c.undo()
    assert c.redo() and c.redo() and c.identities.identity[new] == -1
    assert not c.redo()


def test_split_makes_a_new_unassigned_tracklet_and_records_it(tracked):
    _, run = tracked
    c = Corrections.start(run.result)
    tid = long_tracklets(run.result, 1)[0]
    t0, t1 = int(run.result.tracklets.start[tid]), int(run.result.tracklets.end[tid])
    cut = (t0 + t1) // 2
    blob = c.blob_at(tid, cut)
    new = c.split(tid, cut)
    t = c.result.tracklets
    assert (t.start[tid], t.end[tid]) == (t0, cut - 1) and (t.start[new], t.end[new]) == (cut, t1)
    assert t.end_reason[tid] == MANUAL_SPLIT
    slot = int(t.individual[tid])
    assert (c.result.tracklet_of[cut:t1 + 1, slot] == new).all()
    assert (c.result.tracklet_of[t0:cut, slot] == tid).all()
    assert c.identities.identity[new] == -1 and c.manual_splits == {cut: [blob]}
    with pytest.raises(NapariTrexError, match="only be split after its first frame"):
        c.split(new, cut)


def test_remove_and_review_queue(tracked):
    _, run = tracked
    c = Corrections.start(run.result)
    c.identities.probability[:] = np.linspace(0.9, 0.1, len(c.identities.probability))
    queue = c.review_queue()
    assert queue[0] == len(queue) - 1  # the least confident first
    c.remove(queue[0])
    assert c.identities.source[queue[0]] == REMOVED and c.identities.identity[queue[0]] == -1
    assert queue[0] not in c.review_queue()
    with pytest.raises(NapariTrexError, match="identity 7 does not exist"):
        c.reassign(0, 7, 0)


def test_next_boundary_walks_the_animals_tracklet_ends(tracked):
    _, run = tracked
    c = Corrections.start(run.result)
    tid = long_tracklets(run.result, 1)[0]
    t = run.result.tracklets
    start = int(t.start[tid])
    nxt = c.next_boundary(tid, start)
    assert nxt is not None and nxt > start
    mine = t.individual == t.individual[tid]
    assert nxt in set(t.start[mine]) | set(t.end[mine])
    assert c.next_boundary(tid, nxt, forward=False) < nxt


def test_corrections_survive_a_retrack(tracked):
    video, run = tracked
    c = Corrections.start(run.result)
    tid = long_tracklets(run.result, 1)[0]
    t = run.result.tracklets
    cut = int((t.start[tid] + t.end[tid]) // 2)
    blob = c.blob_at(tid, cut)
    new = c.split(tid, cut)
    c.reassign(new, (int(t.individual[tid]) + 1) % 3, cut)
    settings = c.settings(run.settings)
    assert settings.manual_splits == {cut: [blob]}
    again = track_video(video, settings)
    r = again.result
    slot = int(np.flatnonzero([r.assignment[cut, s] >= 0 and
                               r.detections["blob_id"][r.assignment[cut, s]] == blob
                               for s in range(3)])[0])
    piece = int(r.tracklet_of[cut, slot])
    assert r.tracklets.start[piece] == cut  # the manual split is kept
    identities = apply_manual(r, None, settings)
    assert identities.identity[piece] == (int(t.individual[tid]) + 1) % 3
    assert identities.source[piece] == "manual"


def test_the_record_replayed_on_the_same_tracking_gives_back_the_edited_identities(tracked):
    _, run = tracked
    edits = Corrections.start(run.result)
    first, second = long_tracklets(run.result)
    t = run.result.tracklets
    middle = int((t.start[first] + t.end[first]) // 2)
    new = edits.split(first, middle)
    edits.reassign(new, int(t.individual[second]), middle)  # a switch the tracker missed
    edits.remove(second)
    record = edits.record
    result, identities, edited, report = record.apply(run.result, None)
    assert report == {"applied": len(record), "not_found": 0}
    assert len(result.tracklets) == len(edits.result.tracklets)
    assert identities.identity.tolist() == edits.identities.identity.tolist()
    assert list(identities.source) == list(edits.identities.source)
    assert edited[new] and edited[second]
