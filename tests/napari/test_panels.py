"""The dock panels as a user drives them: open a video, preview, track, cancel, identify,
read the timeline and the dataset view. Core results are tested in tests/core; here only
what the panels do with them."""

from __future__ import annotations

import numpy as np
import pytest

from napari_trex.core.datasets import generate
from napari_trex.napari.session import POINTS_LAYER, TRACKS_LAYER, session_for

PLUGIN = "napari-trex"


@pytest.fixture(scope="module")
def trio_video(tmp_path_factory):
    """3 animals, 150 frames, written as an mp4 (opened through the plugin's reader)."""
    path = tmp_path_factory.mktemp("panels") / "trio.mp4"
    video, _ = generate(n_individuals=3, n_frames=150, seed=2).write(path)
    return video


def open_panel(viewer, name):
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


@pytest.fixture
def tracking_panel(make_napari_viewer, trio_video):
    viewer = make_napari_viewer()
    viewer.open(str(trio_video), plugin=PLUGIN)
    panel = open_panel(viewer, "Tracking")
    panel.form.field("track_max_individuals").value = 3
    panel.form.field("track_max_speed").value = 30.0
    return viewer, panel


def wait_for(qtbot, job, timeout=120_000):
    # the outcome is known when the worker returns; the panel hears of it (buttons back) when
    # the worker has finished, a moment later on a busy machine
    qtbot.waitUntil(lambda: job.finished, timeout=timeout)


def test_panels_open_by_name(make_napari_viewer):
    viewer = make_napari_viewer()
    for name in ("Tracking", "Visual identification", "Timeline", "Dataset"):
        assert open_panel(viewer, name) is not None


def test_tracking_from_the_panel_adds_tracks_and_points_coloured_by_identity(tracking_panel, qtbot):
    viewer, panel = tracking_panel
    assert panel.video_layer.value.name == "trio"
    job = panel.start_tracking()
    assert panel.cancel_button.enabled and not panel.track_button.enabled
    wait_for(qtbot, job)
    assert job.outcome == "done"
    tracks, points = viewer.layers[TRACKS_LAYER], viewer.layers[POINTS_LAYER]
    assert {"identity", "tracklet", "end_reason", "confidence"} <= set(tracks.features.columns)
    run = session_for(viewer).run
    assert set(np.unique(tracks.data[:, 0]).astype(int)) <= set(run.result.tracklets.id.tolist())
    # before identification: tracking slots shown, nothing counts as identified
    assert set(points.features["identity"]) == {0, 1, 2}
    assert not points.features["identified"].any()
    # the same identity has the same colour in both layers, different identities differ
    colour = {}
    for ident, face in zip(points.features["identity"], points.border_color):
        colour.setdefault(int(ident), tuple(np.round(face, 3)))
        assert colour[int(ident)] == tuple(np.round(face, 3))
    assert len(set(colour.values())) == 3
    track_colour = tracks.track_colors[tracks.features["identity"].to_numpy() == 1][0]
    assert np.allclose(track_colour, colour[1], atol=1e-3)
    assert panel.track_button.enabled and not panel.cancel_button.enabled


def test_cancel_stops_tracking_and_keeps_the_earlier_layers(tracking_panel, qtbot):
    viewer, panel = tracking_panel
    wait_for(qtbot, panel.start_tracking())
    before = viewer.layers[TRACKS_LAYER].data.copy()
    run_before = session_for(viewer).run
    panel.form.field("track_max_speed").value = 25.0
    job = panel.start_tracking()
    panel.cancel()
    wait_for(qtbot, job)
    assert job.outcome == "cancelled"
    assert session_for(viewer).run is run_before
    assert np.array_equal(viewer.layers[TRACKS_LAYER].data, before)
    assert "cancelled" in panel.status.value


def test_preview_reacts_to_the_threshold(tracking_panel):
    viewer, panel = tracking_panel
    viewer.dims.set_current_step(0, 20)
    panel.preview.value = True
    preview = viewer.layers["blob preview"]
    found = int((preview.data == 1).sum())
    assert found > 0  # the animals are there, in green (inside blob_size_ranges)
    panel.form.field("threshold").value = 250  # nothing is that different from the background
    assert int((viewer.layers["blob preview"].data > 0).sum()) < found / 10
    panel.preview.value = False
    assert "blob preview" not in viewer.layers


def test_bad_parameter_text_gives_a_notification_not_a_traceback(tracking_panel, monkeypatch):
    viewer, panel = tracking_panel
    errors = []
    monkeypatch.setattr("napari.utils.notifications.show_error", errors.append)
    panel.form.field("blob_size_ranges").value = "[[3, 1]]"
    assert panel.start_tracking() is None
    assert errors and "blob_size_ranges" in errors[0]


def test_identify_without_tracking_is_a_notification(make_napari_viewer, monkeypatch):
    viewer = make_napari_viewer()
    errors = []
    monkeypatch.setattr("napari.utils.notifications.show_error", errors.append)
    panel = open_panel(viewer, "Visual identification")
    assert "CPU only" in panel.device.value or "GPU" in panel.device.value
    assert panel.start("start") is None and "track the video first" in errors[0]


def test_timeline_click_moves_the_viewer_and_hover_tells_the_end_reason(tracking_panel, qtbot):
    from qtpy.QtCore import Qt

    viewer, panel = tracking_panel
    timeline = open_panel(viewer, "Timeline")
    wait_for(qtbot, panel.start_tracking())
    assert timeline.model is not None and len(timeline.model.row_labels) == 3
    timeline.resize(600, 120)
    target = timeline.position_of(100, row=0).toPoint()
    qtbot.mouseClick(timeline, Qt.MouseButton.LeftButton, pos=target)
    assert abs(viewer.dims.current_step[0] - 100) <= 1
    bar = int(np.flatnonzero(timeline.model.row == 0)[0])
    middle = (timeline.model.start[bar] + timeline.model.end[bar]) // 2
    point = timeline.position_of(middle, row=0)
    assert "ended:" in timeline.tooltip_at(point.x(), point.y())


def test_identification_panel_trains_plots_and_updates_identities(tracking_panel, qtbot):
    viewer, panel = tracking_panel
    wait_for(qtbot, panel.start_tracking())
    ident = open_panel(viewer, "Visual identification")
    dataset = open_panel(viewer, "Dataset")
    ident.form.field("recognition_image_size").value = "[32, 32]"
    ident.form.field("gpu_max_epochs").value = 3
    ident.form.field("gpu_min_iterations").value = 10
    job = ident.start("start")
    wait_for(qtbot, job, timeout=300_000)
    assert job.outcome == "done"
    assert len(ident.plot.epochs) >= 1 and ident.plot.steps  # progress reached the plot
    # the panel says the uniqueness both ways: ours, and the figure a TRex user compares with
    assert "frames not trained on" in ident.status.value and "as TRex counts" in ident.status.value
    session = session_for(viewer)
    assert session.identities is not None
    points = viewer.layers[POINTS_LAYER]
    assert points.features["identified"].any()
    assert set(points.features["identity"][points.features["identified"]]) <= {0, 1, 2}
    # the dataset view shows the network's averaged prediction in the best segment
    assert dataset.best.rowCount() == 3
    assert dataset.best.item(0, 5).text() != ""
    # apply only with the session's network: no training epochs, identities again
    job = ident.start("apply")
    wait_for(qtbot, job, timeout=300_000)
    assert job.outcome == "done" and session.identities is not None


def test_identification_without_a_global_segment_learns_from_tracklet_pairs_and_says_so(
        tracking_panel, qtbot):
    from napari_trex.core.tracklets import GlobalSegments

    viewer, panel = tracking_panel
    wait_for(qtbot, panel.start_tracking())
    session = session_for(viewer)
    empty = np.empty(0, int)
    session.run.segments = GlobalSegments(empty, empty, empty.astype(float), empty.astype(float), empty)
    ident = open_panel(viewer, "Visual identification")
    ident.form.field("recognition_image_size").value = "[32, 32]"
    ident.form.field("gpu_max_epochs").value = 3
    ident.form.field("gpu_min_iterations").value = 10
    seen = []
    job = ident.start("start")
    job.worker.yielded.connect(lambda _: seen.append(ident.status.value))
    wait_for(qtbot, job, timeout=300_000)
    assert job.outcome == "done"
    # while it learns, the panel keeps saying which path it took and why
    learning = [s for s in seen if "pairs told apart" in s]
    assert learning and all("no global segment (all 3 animals" in s for s in learning)
    assert session.identities is not None and (session.identities.identity >= 0).any()
    assert ident.start_button.enabled


def test_preview_counts_kinds_apart_draws_the_census_and_hides_no_floor(tracking_panel):
    viewer, panel = tracking_panel
    panel.form.field("threshold").value = 9
    panel.form.field("track_threshold").value = 15  # in the form, not hidden
    panel.preview.value = True
    status = panel.status.value
    assert "animal-sized" in status and "fragments" in status and "specks" in status
    assert "track_threshold 15 is above threshold 9" in status
    census = panel.census.census
    assert not panel.census.isHidden() and census.counts.sum() > 0 and len(census.in_range) > 0
    assert census.ranges and census.expected == 3
    panel.form.field("track_threshold").value = 5
    assert "track_threshold" not in panel.status.value and "threshold 9" in panel.status.value


def test_the_panel_says_what_lengths_rest_on_until_calibrated(tracking_panel):
    viewer, panel = tracking_panel
    panel.update_preview()
    assert "cm_per_pixel is 0" in panel.units.value and "px per frame" in panel.units.value
    # the way to calibrate that the panel offers, not a command-line option
    assert "calibration line" in panel.units.value and "--set" not in panel.units.value
    panel.form.field("cm_per_pixel").value = 0.05
    assert "calibrated" in panel.units.value


def test_defaults_that_miss_the_animals_are_measured_and_the_panel_says_which(
        make_napari_viewer, qtbot, tmp_path, monkeypatch):
    # a user types only the number of animals; at the guessed scale the default sizes and speed
    # miss these animals (3.5 cm², 2 px per frame): both are measured, and the panel says so
    path, _ = generate(n_individuals=2, n_frames=60, size=128, seed=5, body_length=16).write(
        tmp_path / "small.mp4")
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin=PLUGIN)
    panel = open_panel(viewer, "Tracking")
    panel.form.field("track_max_individuals").value = 2
    infos = []
    monkeypatch.setattr("napari.utils.notifications.show_info", infos.append)
    job = panel.start_tracking()
    wait_for(qtbot, job)
    assert job.outcome == "done"
    assert "estimated track_max_speed" in panel.status.value
    assert "estimated blob_size_ranges" in panel.status.value
    assert "--set" not in panel.status.value  # the panel's own words for calibrating, above
    assert any("blob_size_ranges, track_max_speed" in m and "Track tab" in m for m in infos)
    used = session_for(viewer).run.settings
    assert used.track_max_speed > 10.0
    # the fields now show what the tracking used (a second Track keeps it)
    shown = panel.form.settings(used)
    assert shown.track_max_speed == pytest.approx(used.track_max_speed)
    assert np.allclose(shown.blob_size_ranges, used.blob_size_ranges, rtol=1e-3)
