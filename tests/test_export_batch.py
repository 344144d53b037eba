"""Exporting trajectories in TRex's format, and running the same settings on a batch."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_trex.cli import main
from napari_trex.core.batch import run_batch, summary_table
from napari_trex.core.corrections import Corrections
from napari_trex.core.datasets import generate
from napari_trex.core.errors import SettingsError
from napari_trex.core.export import FIELDS, cm_per_pixel_from_line, export_trajectories, individual_tables
from napari_trex.core.pipeline import track_video
from napari_trex.core.results import load_identities_and_edits, load_tracking, save_tracking
from napari_trex.core.settings import Settings
from napari_trex.core.video import open_video

SET = ["--set", "track_max_individuals=3", "--set", "track_max_speed=30"]


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    video, _ = generate(n_individuals=3, n_frames=120, seed=3).write(folder / "trio.mp4")
    settings = Settings().updated(track_max_individuals=3, track_max_speed=30.0, cm_per_pixel=0.05)
    run = track_video(open_video(video), settings)
    return video, run


def test_per_individual_tables_have_trex_fields_and_units(trio):
    _, run = trio
    tables = individual_tables(run)
    assert sorted(tables) == [0, 1, 2]
    t = tables[0]
    assert set(FIELDS) <= set(t) and "frame_segments" in t
    assert np.array_equal(t["frame"], np.arange(t["frame"][0], t["frame"][-1] + 1))
    seen = t["missing"] == 0
    # X in cm = px * cm_per_pixel
    r = run.result
    f0 = int(t["frame"][seen][0])
    row = r.assignment[f0, 0]
    assert t["X"][seen][0] == pytest.approx(r.detections["x"][row] * 0.05)
    assert np.isinf(t["X"][~seen]).all()  # TRex's invalid value where missing
    speed = t["SPEED"][np.isfinite(t["SPEED"])]
    assert len(speed) and (speed >= 0).all()
    step = np.flatnonzero(seen[1:] & seen[:-1])[0] + 1
    dist = np.hypot(t["X"][step] - t["X"][step - 1], t["Y"][step] - t["Y"][step - 1])
    assert t["SPEED"][step] == pytest.approx(dist * 25)


def test_removed_tracklets_are_not_exported_and_edits_are_marked(trio, tmp_path):
    _, run = trio
    c = Corrections.start(run.result)
    longest = int(np.argmax(run.result.tracklets.length))
    c.remove(longest)
    other = int(np.argsort(run.result.tracklets.length)[-2])
    new_identity = (int(c.identities.identity[other]) + 1) % 3
    c.reassign(other, new_identity, int(run.result.tracklets.start[other]))
    tables = individual_tables(run, c.identities, c.edited)
    gone = np.concatenate([tb["tracklet_id"] for tb in tables.values()])
    assert longest not in gone
    mine = tables[new_identity]
    assert (mine["edited"][mine["tracklet_id"] == other] == 1).all()


def test_export_command_writes_trex_files(trio, tmp_path, capsys):
    video, run = trio
    out = tmp_path / "out"
    save_tracking(run, out)
    assert main(["export", str(out), "--set", "cm_per_pixel=0.1"]) == 0
    assert "wrote" in capsys.readouterr().out
    data = out / "data"
    with np.load(data / "trio_id1.npz") as z:
        assert {"frame", "time", "X", "Y", "ANGLE", "SPEED", "missing", "tracklet_id",
                "frame_segments"} <= set(z.files)
    with open(data / "trio_id1.csv", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    assert header[:5] == ["frame", "time (s)", "X (cm)", "Y (cm)", "ANGLE (rad)"]
    assert "SPEED (cm/s)" in header and "missing" in header and "tracklet_id" in header
    with open(data / "trio_trajectories.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert {int(r["identity"]) for r in rows} == {0, 1, 2}
    # bad format: one line, non-zero
    assert main(["export", str(out), "--format", "xls"]) == 1
    assert "--format" in capsys.readouterr().err


def test_calibration_line():
    assert cm_per_pixel_from_line((0, 0), (30, 40), 10.0) == pytest.approx(0.2)
    with pytest.raises(SettingsError, match="no length"):
        cm_per_pixel_from_line((5, 5), (5, 5), 10.0)


def test_corrections_round_trip_through_the_output_folder(trio, tmp_path):
    _, run = trio
    c = Corrections.start(run.result)
    tid = int(np.argmax(run.result.tracklets.length))
    cut = int((run.result.tracklets.start[tid] + run.result.tracklets.end[tid]) // 2)
    c.split(tid, cut)
    run.result = c.result
    save_tracking(run, tmp_path, identities=c.identities, edited=c.edited,
                  settings=c.settings(run.settings))
    back = load_tracking(tmp_path)
    ids, edited = load_identities_and_edits(tmp_path)
    assert len(back.result.tracklets) == len(c.result.tracklets)
    assert np.array_equal(ids.identity, c.identities.identity) and np.array_equal(edited, c.edited)
    assert back.settings.manual_splits == c.manual_splits


@pytest.fixture(scope="module")
def three_videos(tmp_path_factory):
    """Two good generated videos and one corrupt file."""
    folder = tmp_path_factory.mktemp("batch")
    good = [generate(n_individuals=2, n_frames=60, seed=s).write(folder / f"v{s}.mp4")[0] for s in (1, 2)]
    bad = folder / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    settings = Settings().updated(track_max_individuals=2, track_max_speed=30.0)
    path = settings.save(folder / "run.toml")
    return [*good[:1], bad, *good[1:]], settings, path


def test_batch_reports_the_corrupt_video_and_finishes_the_others(three_videos, tmp_path):
    videos, settings, _ = three_videos
    rows = run_batch(videos, settings, tmp_path, scheduler="processes")
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    assert "broken.mp4" in rows[1]["video"] and rows[1]["error"]
    for r in (rows[0], rows[2]):
        assert (tmp_path / r["video"].rsplit("/", 1)[-1][:-4] / "run.json").is_file()
        assert r["tracklets"] > 0
    table = summary_table(rows)
    assert "2 of 3 videos done, 1 failed" in table


def test_batch_on_a_dask_distributed_cluster(three_videos, tmp_path):
    from distributed import Client, LocalCluster

    videos, settings, _ = three_videos
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        rows = run_batch([videos[0], videos[2]], settings, tmp_path, scheduler=client)
        assert [r["status"] for r in rows] == ["ok", "ok"]
        address = cluster.scheduler_address
        rows = run_batch([videos[0]], settings, tmp_path / "by_address", scheduler=address)
        assert rows[0]["status"] == "ok"


def test_batch_command_prints_a_summary_and_fails_when_one_failed(three_videos, tmp_path, capsys):
    videos, _, toml = three_videos
    code = main(["batch", *map(str, videos), "--settings", str(toml), "-o", str(tmp_path),
                 "--scheduler", "threads"])
    captured = capsys.readouterr()
    assert code == 1
    assert "2 of 3 videos done" in captured.out
    assert "broken.mp4" in captured.err
