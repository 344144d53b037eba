"""A results folder is a project: a re-run, a crash, a bad path or a stale file never costs the
user the corrections, identities or network they made, and every refusal is one clear line."""

from __future__ import annotations

import errno
import json
import os
import stat

import numpy as np
import pytest
import torch

from napari_trex.cli import main
from napari_trex.core import results, workflow
from napari_trex.core.corrections import REMOVED, Corrections
from napari_trex.core.datasets import generate
from napari_trex.core.errors import NapariTrexError, VideoError
from napari_trex.core.export import individual_tables
from napari_trex.core.identification.network import IdentityNetwork, load_weights, save_weights
from napari_trex.core.pipeline import track_video
from napari_trex.core.results import load_identities_and_edits, load_tracking
from napari_trex.core.settings import Settings
from napari_trex.core.video import ArrayVideo
from napari_trex.core.workflow import Outcome, Project, save

COMMON = ["--set", "track_max_individuals=3", "--set", "track_max_speed=30", "-q"]


@pytest.fixture
def video(trio_video):
    return trio_video


@pytest.fixture
def tracked(video, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["track", str(video), "-o", str(out), *COMMON]) == 0
    capsys.readouterr()
    return out


def _long_tracklets(run, k=2):
    t = run.result.tracklets
    return [int(i) for i in np.argsort(t.end - t.start)[::-1][:k]]


def _correct_by_hand(out, network=False):
    """What a user does in the Corrections panel, saved: a reassignment (a swap) and a tracklet
    marked "not an animal"; ``network``: identities as an identification would have left them."""
    project = Project.open(out)
    run = project.run
    edits = Corrections.start(run.result, None, record=project.corrections)
    if network:
        edits.identities.source[:] = "network"
        edits.identities.probability[:] = 0.9
    long, other = _long_tracklets(run)
    new_identity = (int(edits.identities.identity[long]) + 1) % 3
    if not network:  # (a swap touches every tracklet of this short video)
        edits.reassign(long, new_identity, int(run.result.tracklets.start[long]))
    edits.remove(other)
    save(out, Outcome(run, identities=edits.identities, edited=edits.edited,
                      corrections=edits.record))
    save_weights(IdentityNetwork(3, (32, 32)), out / "identification_weights.pt", {})
    return run, long, other, new_identity


def _blob(run, tracklet):
    t = run.result.tracklets
    frame, slot = int(t.start[tracklet]), int(t.individual[tracklet])
    return frame, int(run.result.detections["blob_id"][run.result.assignment[frame, slot]])


def _tracklet_holding(run, frame, blob):
    for slot, row in enumerate(run.result.assignment[frame]):
        if row >= 0 and run.result.detections["blob_id"][row] == blob:
            return int(run.result.tracklet_of[frame, slot])
    return None


def test_a_rerun_with_other_parameters_keeps_hand_corrections_and_the_network(tracked, video, capsys):
    before, long, other, new_identity = _correct_by_hand(tracked)
    decisions = len(Project.open(tracked).corrections)  # the swap's two matches, the removal
    assert decisions == 3
    assert main(["track", str(video), "-o", str(tracked), *COMMON,
                 "--set", "track_max_speed=31"]) == 0
    assert f"re-applied {decisions} hand correction(s)" in capsys.readouterr().out
    after = load_tracking(tracked)
    assert after.run_id != before.run_id  # really tracked again
    identities, edited = load_identities_and_edits(tracked)
    moved = _tracklet_holding(after, *_blob(before, long))
    gone = _tracklet_holding(after, *_blob(before, other))
    assert identities.identity[moved] == new_identity and identities.source[moved] == "manual"
    assert identities.source[gone] == REMOVED and edited[moved] and edited[gone]
    assert (tracked / "identification_weights.pt").is_file()
    assert len(Project.open(tracked).corrections) == decisions


def test_a_rerun_that_would_drop_identities_stops_before_any_work_unless_overwrite(
        tracked, video, capsys, monkeypatch):
    _correct_by_hand(tracked, network=True)
    trajectories = (tracked / "trajectories.csv").read_bytes()
    calls = []
    import napari_trex.core.pipeline as pipeline

    real = pipeline.track_video
    monkeypatch.setattr(pipeline, "track_video", lambda *a, **k: calls.append(1) or real(*a, **k))
    changed = [*COMMON, "--set", "track_max_speed=31"]
    assert main(["track", str(video), "-o", str(tracked), *changed]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err and "identities of" in err
    assert not calls and (tracked / "trajectories.csv").read_bytes() == trajectories
    assert main(["track", str(video), "-o", str(tracked), *changed, "--overwrite"]) == 0
    identities, _ = load_identities_and_edits(tracked)
    assert "network" not in set(identities.source)  # the stale ones went, the hand-made stayed
    assert REMOVED in set(identities.source)
    assert (tracked / "identification_weights.pt").is_file()


def test_the_same_parameters_reuse_the_folder_and_change_nothing(tracked, video, capsys):
    _correct_by_hand(tracked)
    files = {p.name: p.read_bytes() for p in tracked.iterdir() if p.is_file()}
    assert main(["track", str(video), "-o", str(tracked), *COMMON]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in tracked.iterdir() if p.is_file()} == files


def test_defaults_measured_instead_are_reused_while_left_as_defaults(tmp_path, capsys):
    # the default sizes and speed miss these animals (3.5 cm², 2 px per frame): the run measured
    # its own; the same command again (still the defaults) reuses it, a speed set tracks again
    path, _ = generate(n_individuals=2, n_frames=60, size=128, seed=5, body_length=16).write(
        tmp_path / "v.mp4")
    out = tmp_path / "out"
    assert main(["track", str(path), "-o", str(out), "--set", "track_max_individuals=2"]) == 0
    said = capsys.readouterr().out
    assert "estimated track_max_speed" in said and "estimated blob_size_ranges" in said
    first = load_tracking(out)
    assert set(first.auto.replaced_defaults) == {"blob_size_ranges", "track_max_speed"}
    assert main(["track", str(path), "-o", str(out), "--set", "track_max_individuals=2", "-q"]) == 0
    assert "nothing to do" in capsys.readouterr().out and load_tracking(out).run_id == first.run_id
    speed = first.settings.track_max_speed * 1.1
    assert main(["track", str(path), "-o", str(out), "--set", "track_max_individuals=2",
                 "--set", f"track_max_speed={speed}", "-q"]) == 0
    again = load_tracking(out)
    assert again.run_id != first.run_id and again.settings.track_max_speed == pytest.approx(speed)
    assert "track_max_speed" not in again.auto.replaced_defaults


def test_a_video_replaced_at_the_same_path_is_not_taken_for_the_old_one(tmp_path, capsys):
    path, _ = generate(n_individuals=3, n_frames=80, size=256, seed=3).write(tmp_path / "v.mp4")
    out = tmp_path / "out"
    assert main(["track", str(path), "-o", str(out), *COMMON]) == 0
    first = load_tracking(out).run_id
    generate(n_individuals=3, n_frames=80, size=256, seed=4).write(tmp_path / "v.mp4")
    capsys.readouterr()
    assert main(["track", str(path), "-o", str(out), *COMMON]) == 0
    assert "reusing" not in capsys.readouterr().out and load_tracking(out).run_id != first
    _correct_by_hand(out)
    generate(n_individuals=3, n_frames=80, size=256, seed=5).write(tmp_path / "v.mp4")
    assert main(["track", str(path), "-o", str(out), *COMMON]) == 1
    assert "another video" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["a file", "under a file", "read-only"])
def test_the_output_folder_is_checked_before_any_work(tmp_path, video, capsys, monkeypatch, where):
    import napari_trex.core.pipeline as pipeline

    monkeypatch.setattr(pipeline, "track_video", lambda *a, **k: pytest.fail("tracked anyway"))
    (tmp_path / "file").write_text("x")
    out = {"a file": tmp_path / "file", "under a file": tmp_path / "file" / "out",
           "read-only": tmp_path / "ro"}[where]
    if where == "read-only":
        out.mkdir()

        def refuse(*_a, **_k):  # what a read-only mount does (root ignores chmod here)
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(workflow.tempfile, "NamedTemporaryFile", refuse)
    assert main(["track", str(video), "-o", str(out), *COMMON]) == 1
    err = capsys.readouterr().err
    assert err.startswith("napari-trex: error: ") and err.count("\n") == 1


def test_damaged_weights_are_refused_before_tracking(tmp_path, video, capsys, monkeypatch):
    import napari_trex.core.pipeline as pipeline

    monkeypatch.setattr(pipeline, "track_video", lambda *a, **k: pytest.fail("tracked anyway"))
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"not weights")
    code = main(["track", str(video), "-o", str(tmp_path / "o"), *COMMON, "--identify",
                 "--weights", str(weights)])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "cannot load identification weights" in err


def test_a_weights_file_cannot_run_code(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"state": Payload(), "n_identities": 2, "size": (8, 8)}, tmp_path / "evil.pt")
    with pytest.raises(NapariTrexError, match="cannot load identification weights"):
        load_weights(tmp_path / "evil.pt", torch.device("cpu"))
    assert not marker.exists()


def test_more_animals_asked_for_than_ever_seen_at_once_stops_and_still_saves_the_tracking(
        tmp_path, video, capsys):
    out = tmp_path / "out"
    code = main(["track", str(video), "-o", str(out), "--set", "track_max_individuals=5",
                 "--set", "track_max_speed=30", "-q", "--identify"])
    err = capsys.readouterr().err
    assert code == 1 and "no global segment" in err and "tracking is saved" in err
    assert "set track_max_individuals = 3" in err
    assert load_tracking(out).n_individuals == 5


def test_a_save_killed_halfway_is_completed_when_the_folder_is_opened(tracked, video, monkeypatch):
    old = load_tracking(tracked)
    real_replace, moves = os.replace, []

    def killed(src, dst):
        if os.path.dirname(dst) == str(tracked) and ".napari-trex-" in str(src) \
                and not str(dst).endswith(results.JOURNAL):  # moving the staged files in
            if len(moves) == 3:
                raise KeyboardInterrupt  # as far as the files are concerned: kill -9 here
            moves.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(results.os, "replace", killed)
    monkeypatch.setattr(results.shutil, "rmtree", lambda *a, **k: None)  # a killed process cleans nothing
    run = track_video(str(video), old.settings)
    with pytest.raises(KeyboardInterrupt):
        results.save_tracking(run, tracked)
    monkeypatch.undo()
    assert (tracked / results.JOURNAL).exists()
    reopened = load_tracking(tracked)  # finishes the moves the journal lists
    assert reopened.run_id == run.run_id
    assert not (tracked / results.JOURNAL).exists()
    assert not [p for p in tracked.iterdir() if p.name.startswith(".napari-trex-")]


def test_export_replaces_the_files_of_an_earlier_export(tracked, capsys):
    stale = tracked / "data" / "trio_id9.csv"
    stale.parent.mkdir()
    stale.write_text("from an earlier run with more animals")
    assert main(["export", str(tracked)]) == 0
    names = sorted(p.name for p in (tracked / "data").iterdir())
    assert "trio_id9.csv" not in names
    assert f"wrote {len(names)} files" in capsys.readouterr().out


def test_speed_is_a_number_wherever_the_animal_was_seen(tracked):
    run = load_tracking(tracked)
    for table in individual_tables(run).values():
        seen = table["missing"] == 0
        assert np.isfinite(table["SPEED"][seen]).all() and np.isfinite(table["VX"][seen]).all()
        assert np.isinf(table["SPEED"][~seen]).all()


def test_files_are_written_as_the_umask_says(tmp_path, video, capsys):
    previous = os.umask(0o022)
    try:
        out = tmp_path / "out"
        assert main(["track", str(video), "-o", str(out), *COMMON]) == 0
        assert main(["export", str(out)]) == 0
        save_weights(IdentityNetwork(3, (32, 32)), out / "identification_weights.pt", {})
        files = [p for p in out.rglob("*") if p.is_file()]
        assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in files)
        assert stat.S_IMODE((out / "data").stat().st_mode) == 0o755
    finally:
        os.umask(previous)


@pytest.mark.parametrize("case", ["params onto a folder", "bogus scheduler", "damaged run.json",
                                  "damaged tracking.npz", "export read-only", "TIFF without frames"])
def test_more_bad_input_is_one_line(tracked, video, tmp_path, capsys, monkeypatch, case):
    if case == "params onto a folder":
        args = ["params", "--set", "threshold=20", "--save", str(tmp_path)]
    elif case == "bogus scheduler":
        args = ["track", str(video), "-o", str(tmp_path / "o"), "--scheduler", "bogus"]
    elif case == "damaged run.json":
        (tracked / "run.json").write_text("{not json")
        args = ["export", str(tracked)]
    elif case == "TIFF without frames":
        import warnings

        import tifffile

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tifffile: "writing zero-size array"
            tifffile.imwrite(tmp_path / "empty.tif", np.zeros((0, 10, 10), np.uint8))
        args = ["track", str(tmp_path / "empty.tif"), "-o", str(tmp_path / "o")]
    elif case == "damaged tracking.npz":
        (tracked / "tracking.npz").write_bytes(b"PK\x03\x04 broken")
        args = ["export", str(tracked)]
    else:
        def refuse(*_a, **_k):
            raise PermissionError(errno.EACCES, "Permission denied", str(tracked))

        import napari_trex.core.export as export

        monkeypatch.setattr(export.tempfile, "mkdtemp", refuse)
        args = ["export", str(tracked)]
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("napari-trex: error: ") and err.count("\n") == 1


def test_an_old_folder_without_a_corrections_record_gives_its_corrections_back(tracked):
    run, long, other, new_identity = _correct_by_hand(tracked)
    (tracked / "corrections.json").unlink()  # as written by an earlier version
    record = Project.open(tracked).corrections
    assert sum(len(v) for v in record.not_animals.values()) == 1
    assert any(new_identity in m for m in record.manual_matches.values())
    assert json.loads(json.dumps(record.to_json()))  # and it is plain JSON


class _TruncatedVideo(ArrayVideo):
    """A recording whose last frames cannot be decoded (the header counts them; FFmpeg gives up
    2-3 frames before the end), as a file cut short by a full card does."""

    def __init__(self, frames, decodable):
        super().__init__(frames, 25)
        self.decodable = decodable

    def _iter_range(self, start, stop, threads=None):
        for index, frame in super()._iter_range(start, min(stop, self.decodable), threads):
            yield index, frame
        if stop > self.decodable:
            raise VideoError(f"frame {self.decodable} could not be decoded; the file seems truncated")

    def read(self, index):
        if index >= self.decodable:
            raise VideoError(f"frame {index} could not be decoded; the file seems truncated")
        return super().read(index)


def test_a_truncated_recording_is_tracked_to_its_last_decodable_frame_with_a_warning():
    synthetic = generate(n_individuals=3, n_frames=90, size=256, seed=3, body_length=20)
    video = _TruncatedVideo(synthetic.frames, decodable=87)
    run = track_video(video, Settings().updated(track_max_individuals=3, track_max_speed=30.0),
                      scheduler="threads", chunk_frames=30)
    assert run.result.assignment.shape[0] == 90
    assert (run.result.assignment[:87] >= 0).all() and (run.result.assignment[87:] < 0).all()
    assert any("frames after 86 could not be decoded" in w for w in run.auto.warnings)


def test_analysis_range_restricts_the_frames_that_are_tracked():
    synthetic = generate(n_individuals=3, n_frames=90, size=256, seed=3, body_length=20)
    settings = Settings().updated(track_max_individuals=3, track_max_speed=30.0,
                                  analysis_range=(20, 59))
    run = track_video(ArrayVideo(synthetic.frames, 25), settings, chunk_frames=30)
    seen = (run.result.assignment >= 0).any(axis=1)
    assert not seen[:20].any() and seen[20:60].all() and not seen[60:].any()
    with pytest.raises(NapariTrexError, match="analysis_range"):
        Settings().updated(analysis_range=(50, 10))


def test_lengths_say_what_they_rest_on_until_calibrated(video, tmp_path, capsys):
    assert main(["track", str(video), "-o", str(tmp_path / "a"), *COMMON]) == 0
    out = capsys.readouterr().out
    assert "cm_per_pixel is 0: the frame is assumed 30 cm wide" in out and "px per frame" in out
    assert "--set cm_per_pixel=" in out  # the way to calibrate here
    assert main(["export", str(tmp_path / "a")]) == 0
    assert "ASSUMED" in capsys.readouterr().out
    assert main(["track", str(video), "-o", str(tmp_path / "b"), *COMMON,
                 "--set", "cm_per_pixel=0.05"]) == 0
    assert "cm_per_pixel is 0" not in capsys.readouterr().out


def test_recognition_enable_false_switches_identification_off(tracked, video, capsys):
    code = main(["track", str(video), "-o", str(tracked), *COMMON, "--identify",
                 "--set", "recognition_enable=false"])
    assert code == 1 and "recognition_enable = false" in capsys.readouterr().err


def test_auto_apply_uses_the_network_in_the_folder_without_training(tracked, video, capsys):
    save_weights(IdentityNetwork(3, (32, 32)), tracked / "identification_weights.pt", {})
    code = main(["track", str(video), "-o", str(tracked), *COMMON, "--set", "auto_apply=true",
                 "--set", "recognition_image_size=[32,32]"])
    out = capsys.readouterr().out
    assert code == 0 and "loaded weights" in out and "initial unit" not in out
    assert load_identities_and_edits(tracked)[0] is not None
    (tracked / "identification_weights.pt").unlink()
    assert main(["track", str(video), "-o", str(tracked), *COMMON, "--set", "auto_apply=true"]) == 1
    assert "auto_apply needs a trained network" in capsys.readouterr().err


def test_exported_files_say_whether_their_cm_are_assumed(tracked):
    assert main(["export", str(tracked)]) == 0
    with np.load(next((tracked / "data").glob("*_id0.npz"))) as z:
        assert bool(z["cm_per_pixel_assumed"]) and float(z["meta_real_width"]) == 30.0
        assert float(z["cm_per_pixel"]) == pytest.approx(30.0 / 256)
