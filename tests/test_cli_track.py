"""`napari-trex track`: a good run writes the tables; bad input writes nothing and says why."""

from __future__ import annotations

import csv
import errno
import re

import pytest

from napari_trex.cli import main
from napari_trex.core.datasets import generate
from napari_trex.core.results import load_tracking
from napari_trex.core.tracklets import REASON_NAMES


@pytest.fixture
def sample(trio_video):
    return trio_video


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_track_writes_trajectories_tracklets_segments_and_settings(capsys, tmp_path, sample):
    out = tmp_path / "out"
    code = main(["track", str(sample), "--output", str(out), "--set", "track_max_individuals=3",
                 "--set", "track_max_speed=30", "--quiet"])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    assert "3 animals" in stdout and "global segments" in stdout
    # how much the global segments hold decides where identification starts: it is said
    assert re.search(r"global segments, their tracklets hold \d+% of the animal-frames", stdout)
    traj = _rows(out / "trajectories.csv")
    assert {"frame", "identity", "x", "y", "angle", "area", "tracklet"} <= set(traj[0])
    assert {int(r["identity"]) for r in traj} == {0, 1, 2}
    assert max(int(r["frame"]) for r in traj) == 149
    tracklets = _rows(out / "tracklets.csv")
    assert list(tracklets[0]) == ["tracklet", "identity", "tracking_slot", "start", "end", "length",
                                  "end_reason", "end_code"]
    known = set(REASON_NAMES.values()) | {"EndOfVideo"}
    assert all(set(r["end_reason"].split("|")) <= known for r in tracklets)
    segments = _rows(out / "global_segments.csv")
    assert segments and {"start", "end", "min_cells", "average_samples", "rank"} <= set(segments[0])
    assert "track_max_individuals = 3" in (out / "settings.toml").read_text()
    run = load_tracking(out)  # the state later steps resume from
    assert run.n_individuals == 3 and len(run.result.tracklets) == len(tracklets)
    assert (run.result.assignment >= 0).sum() == len(traj)  # one row per animal and frame seen


def test_second_run_replaces_the_first_cleanly(tmp_path, sample, capsys):
    out = tmp_path / "out"
    (out).mkdir()
    (out / "notes.txt").write_text("the user's own file")
    for speed in ("30", "20"):
        assert main(["track", str(sample), "-o", str(out), "--set", "track_max_individuals=3",
                     "--set", f"track_max_speed={speed}", "-q"]) == 0
    assert "track_max_speed = 20.0" in (out / "settings.toml").read_text()
    assert (out / "notes.txt").read_text() == "the user's own file"
    assert not [p for p in out.iterdir() if p.name.startswith(".napari-trex-")]  # no staging left
    capsys.readouterr()


@pytest.mark.parametrize("args", [
    ["track", "{missing}", "-o", "{out}"],
    ["track", "{bad_video}", "-o", "{out}"],
    ["track", "{video}", "-o", "{out}", "--set", "track_max_speed=-4"],
    ["track", "{video}", "-o", "{out}", "--set", "track_max_spede=4"],
    ["track", "{video}", "-o", "{out}", "--settings", "{missing}.toml"],
], ids=["missing-video", "not-a-video", "impossible-value", "unknown-name", "missing-settings"])
def test_bad_input_is_one_line_non_zero_and_writes_nothing(capsys, tmp_path, sample, args):
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 2048)
    names = {"missing": str(tmp_path / "missing.mp4"), "bad_video": str(tmp_path / "bad.mp4"),
             "video": str(sample), "out": str(tmp_path / "out")}
    code = main([a.format(**names) for a in args])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("napari-trex: error: ") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_failed_run_leaves_the_previous_results_intact(tmp_path, sample, capsys, monkeypatch):
    out = tmp_path / "out"
    assert main(["track", str(sample), "-o", str(out), "--set", "track_max_individuals=3", "-q"]) == 0
    before = (out / "trajectories.csv").read_bytes()
    import napari_trex.core.results as results

    def disk_full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "trajectories.csv"))

    monkeypatch.setattr(results, "_write_csv", disk_full)
    capsys.readouterr()
    code = main(["track", str(sample), "-o", str(out), "--set", "track_max_individuals=3", "-q",
                 "--retrack"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "No space left on device" in err
    assert (out / "trajectories.csv").read_bytes() == before
    assert (out / "run.json").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".napari-trex-")]
    capsys.readouterr()


@pytest.mark.timeout(600)
def test_track_and_identify_writes_identities_and_reuses_the_tracking(capsys, tmp_path):
    video, _ = generate(n_individuals=3, n_frames=200, seed=2).write(tmp_path / "trio.mp4")
    out = tmp_path / "out"
    common = ["--set", "track_max_individuals=3", "--set", "track_max_speed=30", "-q"]
    assert main(["track", str(video), "-o", str(out), *common]) == 0
    capsys.readouterr()
    code = main(["track", str(video), "-o", str(out), *common, "--identify",
                 "--set", "recognition_image_size=[32,32]", "--set", "gpu_max_epochs=30"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "reusing the tracking" in stdout and "training on cpu" in stdout
    assert "uniqueness" in stdout
    traj = _rows(out / "trajectories.csv")
    assert "identity_confidence" in traj[0]
    identified = [r for r in traj if int(r["identity"]) >= 0]
    assert len(identified) / len(traj) > 0.8
    assert {int(r["identity"]) for r in identified} == {0, 1, 2}
    tracklets = _rows(out / "tracklets.csv")
    assert {"probability", "n_samples", "source"} <= set(tracklets[0])
    assert {r["source"] for r in tracklets} <= {"network", "manual", "elimination", "inferred", ""}
    assert (out / "identification_weights.pt").is_file() and (out / "identification.json").is_file()


def test_apply_only_without_weights_is_a_clear_error(capsys, tmp_path, sample):
    code = main(["track", str(sample), "-o", str(tmp_path / "o"), "--identify", "--apply-only"])
    assert code == 1 and "--weights" in capsys.readouterr().err
