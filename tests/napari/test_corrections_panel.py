"""Correcting identities in napari: select, keys, undo/redo, save layers, reopen, export."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_trex.core.datasets import generate
from napari_trex.core.pipeline import track_video
from napari_trex.core.results import save_tracking
from napari_trex.core.settings import Settings
from napari_trex.core.video import open_video
from napari_trex.napari.session import POINTS_LAYER, TRACKS_LAYER, session_for

PLUGIN = "napari-trex"


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corrections")
    video, _ = generate(n_individuals=3, n_frames=120, seed=6).write(folder / "trio.mp4")
    run = track_video(open_video(video), Settings().updated(track_max_individuals=3, track_max_speed=30.0))
    return video, run


@pytest.fixture
def panel(make_napari_viewer, tracked, tmp_path):
    import copy

    video, run = tracked
    viewer = make_napari_viewer()
    viewer.open(str(video), plugin=PLUGIN)
    session = session_for(viewer)
    session.set_run(copy.deepcopy(run), open_video(video), "trio", str(tmp_path / "results"))
    session.show_results(viewer)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Corrections")
    return viewer, widget


def press(viewer, key, modifier=Qt.KeyboardModifier.NoModifier):
    from qtpy.QtWidgets import QApplication
    from qtpy.QtTest import QTest as QtBot

    # the viewer widget forwards key presses to napari's key bindings (as when the canvas has focus)
    QtBot.keyClick(viewer.window._qt_viewer, key, modifier)
    QApplication.processEvents()


def animal(viewer, frame, slot):
    run = session_for(viewer).run
    row = run.result.assignment[frame, slot]
    return run.result.detections["x"][row], run.result.detections["y"][row], int(run.result.tracklet_of[frame, slot])


def longest_frame(viewer):
    t = session_for(viewer).run.result.tracklets
    tid = int(np.argmax(t.length))
    return tid, int((t.start[tid] + t.end[tid]) // 2), int(t.individual[tid])


def test_click_select_then_number_key_reassigns_and_ctrl_z_undoes(panel):
    viewer, widget = panel
    tid, frame, slot = longest_frame(viewer)
    viewer.dims.set_current_step(0, frame)
    x, y, expected = animal(viewer, frame, slot)
    assert widget.select_at(x + 1, y - 1) == expected == tid
    assert "selected animal" in viewer.layers
    old = int(session_for(viewer).identities.identity[tid]) if session_for(viewer).identities is not None \
        else slot
    new = (old + 1) % 3
    press(viewer, getattr(Qt.Key, f"Key_{new}"))
    session = session_for(viewer)
    assert session.identities.identity[tid] == new
    points = viewer.layers[POINTS_LAYER]
    mine = points.features["tracklet"].to_numpy() == tid
    assert (points.features["identity"][mine] == new).all()
    assert (points.symbol[mine] == "diamond").all()  # edited animals are marked
    assert session.run.settings.manual_matches  # recorded as TRex's manual_matches
    press(viewer, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert session.identities.identity[tid] == old
    assert not (viewer.layers[POINTS_LAYER].symbol == "diamond").any()
    press(viewer, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert session.identities.identity[tid] == new


def test_split_key_remove_button_and_tracklet_end_navigation(panel):
    viewer, widget = panel
    tid, frame, slot = longest_frame(viewer)
    viewer.dims.set_current_step(0, frame)
    widget.select(tid)
    press(viewer, Qt.Key.Key_X, Qt.KeyboardModifier.ShiftModifier)
    session = session_for(viewer)
    t = session.run.result.tracklets
    assert t.end[tid] == frame - 1 and widget.selected == len(t) - 1
    assert frame in session.run.settings.manual_splits
    assert TRACKS_LAYER in viewer.layers
    assert widget.selected in set(viewer.layers[TRACKS_LAYER].data[:, 0].astype(int))
    widget.remove_button.changed.emit(True)
    assert session.identities.source[widget.selected] == "removed"
    widget.select(tid)
    viewer.dims.set_current_step(0, int(t.start[tid]))
    press(viewer, Qt.Key.Key_Right, Qt.KeyboardModifier.ShiftModifier)
    assert viewer.dims.current_step[0] > t.start[tid]


def test_review_queue_jumps_to_the_least_confident(panel):
    viewer, widget = panel
    session = session_for(viewer)
    c = session.edit()
    c.identities.probability[:] = 0.9
    doubtful = len(c.identities.probability) - 1  # the last tracklet, whatever their number
    c.identities.probability[doubtful] = 0.1
    widget.next_review()
    assert widget.selected == doubtful
    assert viewer.dims.current_step[0] == session.run.result.tracklets.start[doubtful]


def test_tracks_layer_round_trips_through_our_writer_and_reader(panel, tmp_path):
    viewer, widget = panel
    tid, frame, _ = longest_frame(viewer)
    viewer.dims.set_current_step(0, frame)
    widget.select(tid)
    widget.assign(2 if session_for(viewer).edit().identities.identity[tid] != 2 else 1)
    layer = viewer.layers[TRACKS_LAYER]
    for suffix in (".npz", ".csv"):
        path = tmp_path / f"saved{suffix}"
        written = layer.save(str(path), plugin=PLUGIN)
        assert written and path.is_file()
        [back] = viewer.open(str(path), plugin=PLUGIN)
        assert np.array_equal(back.data, layer.data)
        for column in layer.features.columns:
            assert list(back.features[column]) == list(layer.features[column]), column
        assert back.metadata["manual_matches"] == layer.metadata["manual_matches"] != {}
        assert back.color_by == layer.color_by
        assert np.allclose(back.track_colors, layer.track_colors)


def test_a_failed_save_leaves_the_previous_file_intact(panel, tmp_path, monkeypatch):
    viewer, _ = panel
    layer = viewer.layers[TRACKS_LAYER]
    path = tmp_path / "keep.npz"
    layer.save(str(path), plugin=PLUGIN)
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", broken)
    from napari_trex.napari.writer import write_tracks

    with pytest.raises(OSError):
        write_tracks(str(path), layer.data, {"features": layer.features, "metadata": layer.metadata})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.npz"]  # no temporary file left


def test_save_results_then_open_the_folder_restores_corrections(panel, make_napari_viewer, tmp_path):
    viewer, widget = panel
    tid, frame, _ = longest_frame(viewer)
    viewer.dims.set_current_step(0, frame)
    widget.select(tid)
    widget.split()
    widget.folder.value = str(tmp_path / "res")
    widget.save()
    assert (tmp_path / "res" / "run.json").is_file()
    other = make_napari_viewer()
    layers = other.open(str(tmp_path / "res"), plugin=PLUGIN)
    assert {layer.name for layer in layers} >= {TRACKS_LAYER, POINTS_LAYER}
    tracks = other.layers[TRACKS_LAYER]
    assert tracks.features["edited"].any()
    _, reopened = other.window.add_plugin_dock_widget(PLUGIN, "Corrections")
    session = session_for(other)
    assert session.run is not None and len(session.run.result.tracklets) == \
        len(session_for(viewer).run.result.tracklets)
    assert session.run.settings.manual_splits == session_for(viewer).run.settings.manual_splits


def test_export_save_config_and_calibration(panel, tmp_path):
    viewer, widget = panel
    widget.folder.value = str(tmp_path / "out")
    written = widget.export()
    assert any(p.name == "trio_id0.npz" for p in written)
    widget.config.value = str(tmp_path / "fish.toml")
    widget.save_config()
    assert Settings.load(tmp_path / "fish.toml").track_max_individuals == 3
    widget.draw_calibration_line()
    viewer.layers["calibration"].add_lines(np.array([[0, 0], [0, 200]]))
    widget.length_cm.value = 10.0
    asked = []
    widget.confirm = lambda question: asked.append(question) or False
    assert widget.calibrate() == pytest.approx(0.05)
    assert session_for(viewer).settings.cm_per_pixel == pytest.approx(0.05)
    assert asked and "keep their size in pixels" in asked[0]


def test_calibrating_offers_to_keep_sizes_and_speed_in_pixels(panel):
    viewer, widget = panel
    session = session_for(viewer)
    width = session.run.video_info.width
    _, tracking = viewer.window.add_plugin_dock_widget(PLUGIN, "Tracking")
    tracking.form.field("track_max_speed").value = 30.0  # what the user set: the session's now
    tracking.pixel_units.value = True  # shown in px until calibrated
    shown_speed = tracking.form.field("track_max_speed").value
    before = session.settings
    assert before.track_max_speed == pytest.approx(30.0)
    old_cm = before.pixel_size_cm(width)  # 30 cm / width: assumed
    widget.draw_calibration_line()
    viewer.layers["calibration"].add_lines(np.array([[0, 0], [0, 200]]))
    widget.length_cm.value = 10.0
    widget.confirm = lambda question: True
    new_cm = widget.calibrate()
    ratio = new_cm / old_cm
    after = session.settings
    assert after.track_max_speed == pytest.approx(before.track_max_speed * ratio)
    lo, hi = after.blob_size_ranges[0]
    assert lo == pytest.approx(before.blob_size_ranges[0][0] * ratio ** 2)
    # the Track tab still shows the same pixels, now resting on the calibration
    assert tracking.form.field("track_max_speed").value == pytest.approx(shown_speed, rel=1e-3)
    assert "calibrated" in tracking.units.value


def test_edits_without_a_selection_are_a_notification(make_napari_viewer, monkeypatch):
    viewer = make_napari_viewer()
    errors = []
    monkeypatch.setattr("napari.utils.notifications.show_error", errors.append)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Corrections")
    widget.assign(1)
    assert errors and "first" in errors[0]


def test_tracking_again_from_the_panel_keeps_the_corrections(panel, qtbot):
    viewer, widget = panel
    tid, frame, slot = longest_frame(viewer)
    viewer.dims.set_current_step(0, frame)
    widget.select(tid)
    new = (slot + 1) % 3
    widget.assign(new)
    blob = session_for(viewer).edit().blob_at(tid, frame)
    _, tracking = viewer.window.add_plugin_dock_widget(PLUGIN, "Tracking")
    tracking.form.field("track_max_individuals").value = 3
    tracking.form.field("track_max_speed").value = 30.0
    job = tracking.start_tracking()
    qtbot.waitUntil(lambda: job.finished, timeout=120_000)
    assert job.outcome == "done"
    session = session_for(viewer)
    r = session.run.result
    holder = [s for s in range(3) if r.assignment[frame, s] >= 0
              and r.detections["blob_id"][r.assignment[frame, s]] == blob][0]
    retracked = int(r.tracklet_of[frame, holder])
    assert session.identities.identity[retracked] == new
    assert session.identities.source[retracked] == "manual"
    points = viewer.layers[POINTS_LAYER]
    assert (points.symbol[points.features["tracklet"].to_numpy() == retracked] == "diamond").all()


def test_a_reopened_folder_comes_back_whole_whichever_panel_is_open(panel, make_napari_viewer,
                                                                     tmp_path, tracked):
    from napari_trex.core.identification.network import IdentityNetwork, save_weights

    viewer, widget = panel
    tid, frame, _ = longest_frame(viewer)
    widget.select(tid)
    widget.remove()  # "not an animal"
    folder = tmp_path / "res"
    session_for(viewer).run.settings = session_for(viewer).run.settings.updated(track_max_speed=33.0)
    widget.folder.value = str(folder)
    widget.save()
    save_weights(IdentityNetwork(3, (32, 32)), folder / "identification_weights.pt", {})
    other = make_napari_viewer()
    other.open(str(folder), plugin=PLUGIN)
    from napari_trex.napari.widgets.timeline import TimelineWidget

    timeline = TimelineWidget(other)  # no Corrections panel: the timeline fills anyway
    session = session_for(other)
    assert session.run is not None and timeline.session is session
    assert session.identities.source[tid] == "removed"
    _, tracking = other.window.add_plugin_dock_widget(PLUGIN, "Tracking")
    assert tracking.form.field("track_max_speed").value == 33.0  # the run's, not the default
    assert tracking.form.field("output_dir").value and str(folder) in str(tracking.form.field("output_dir").value)
    assert session.weights_path.endswith("identification_weights.pt")  # Apply only / Continue


def test_not_an_animal_survives_tracking_again_from_the_panel(panel, qtbot, tmp_path):
    viewer, widget = panel
    tid, frame, slot = longest_frame(viewer)
    widget.select(tid)
    widget.remove()
    blob = session_for(viewer).edit().blob_at(tid, frame)
    _, tracking = viewer.window.add_plugin_dock_widget(PLUGIN, "Tracking")
    tracking.form.field("track_max_individuals").value = 3
    tracking.form.field("track_max_speed").value = 31.0
    tracking.form.field("output_dir").value = str(tmp_path / "again")
    job = tracking.start_tracking()
    qtbot.waitUntil(lambda: job.finished, timeout=120_000)
    assert job.outcome == "done"
    r = session_for(viewer).run.result
    holder = [s for s in range(3) if r.assignment[frame, s] >= 0
              and r.detections["blob_id"][r.assignment[frame, s]] == blob][0]
    retracked = int(r.tracklet_of[frame, holder])
    assert session_for(viewer).identities.source[retracked] == "removed"
    from napari_trex.core.workflow import Project

    saved = Project.open(tmp_path / "again")
    assert saved.identities.source[retracked] == "removed"  # saved after the corrections
