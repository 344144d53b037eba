"""One napari-trex dock with tabs and the Timeline along the bottom, usable on a laptop."""

from __future__ import annotations

import pytest
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QApplication, QDockWidget

from napari_trex.core.datasets import generate
from napari_trex.napari.widgets.workspace import PANEL_MIN_HEIGHT, TIMELINE_DOCK

PLUGIN = "napari-trex"
LAPTOP = (1366, 768)


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    path, _ = generate(n_individuals=2, n_frames=60, size=256, seed=1).write(
        tmp_path_factory.mktemp("ws") / "pair.mp4")
    return path


def _settle(qtbot):
    for _ in range(3):
        QApplication.processEvents()
        qtbot.wait(20)


def test_the_workspace_fits_a_laptop_screen_and_shows_the_whole_frame(make_napari_viewer, qtbot,
                                                                      recording):
    viewer = make_napari_viewer()
    viewer.open(str(recording), plugin=PLUGIN)
    window = viewer.window._qt_window
    window.resize(*LAPTOP)
    _, workspace = viewer.window.add_plugin_dock_widget(PLUGIN, "napari-trex")
    _settle(qtbot)
    assert [workspace.tabs.tabText(i) for i in range(workspace.tabs.count())] == \
        ["Track", "Identify", "Correct", "Dataset"]
    hint = window.minimumSizeHint()
    assert hint.width() <= LAPTOP[0] and hint.height() <= LAPTOP[1]
    for dock in window.findChildren(QDockWidget):
        assert dock.minimumSizeHint().height() <= LAPTOP[1], dock.windowTitle()
    for i in range(workspace.tabs.count()):  # every panel, even the tallest, scrolls inside
        assert workspace.tabs.widget(i).minimumSizeHint().height() <= LAPTOP[1]
    timeline = [d for d in window.findChildren(QDockWidget) if d.windowTitle() == TIMELINE_DOCK]
    assert timeline and window.dockWidgetArea(timeline[0]) == Qt.DockWidgetArea.BottomDockWidgetArea
    height, width = viewer.window._qt_viewer.canvas.size
    zoom = viewer.scene.camera.zoom
    assert 256 * zoom <= min(height, width) + 1  # the whole frame is in view ...
    assert 256 * zoom >= 0.8 * min(height, width)  # ... and fills the canvas


def test_panels_opened_one_by_one_scroll_instead_of_squeezing_their_forms(make_napari_viewer, qtbot,
                                                                          recording):
    # a user who prefers the panels on their own opens Tracking, then Visual identification,
    # from the Plugins menu in a window 1000 px high: together they need more height than that
    viewer = make_napari_viewer(show=True)
    viewer.open(str(recording), plugin=PLUGIN)
    window = viewer.window._qt_window
    window.resize(1400, 800)
    panels = [viewer.window.add_plugin_dock_widget(PLUGIN, name)[1]
              for name in ("Tracking", "Visual identification")]
    _settle(qtbot)
    assert window.minimumSizeHint().height() <= 800  # the window is not made taller
    for panel in panels:
        form = panel.form.native  # the panel is driven as before through its wrapper
        assert form.height() >= form.minimumSizeHint().height()  # every row readable ...
        assert panel.verticalScrollBar().maximum() > 0 or \
            panel.viewport().height() >= panel.widget().minimumSizeHint().height()  # ... or it scrolls
        assert panel.height() >= PANEL_MIN_HEIGHT  # and the lower one is not left a strip
    panels[0].form.field("track_max_individuals").value = 2
    assert panels[0].panel.form.field("track_max_individuals").value == 2


def test_a_video_opens_at_its_first_frame_on_an_axis_called_frame(make_napari_viewer, qtbot, recording):
    viewer = make_napari_viewer()
    viewer.open(str(recording), plugin=PLUGIN)
    _settle(qtbot)
    assert viewer.dims.axis_labels[0] == "frame"
    assert viewer.dims.current_step[0] == 0


def test_markers_fit_the_animals_and_labels_sit_outside_the_selection_ring():
    import numpy as np

    from napari_trex.napari.layers import LABEL_OFFSET, SELECTION_SCALE, marker_size

    small, big = marker_size(np.full(10, 118.0)), marker_size(np.full(10, 2846.0))
    assert 12 < small < 20  # a 118 px fish: a ring just around it, not a 40 px disc
    assert 70 < big < 90  # a 2846 px fly: no cap that would leave it under a small dot
    ring_radius = SELECTION_SCALE * small / 2
    assert np.hypot(LABEL_OFFSET * small, LABEL_OFFSET * small) > ring_radius


def test_a_progress_event_overtaken_by_the_result_does_not_overwrite_the_summary(qtbot):
    # napari's progress bar can run the event loop while it repaints: the result (and the
    # panel's summary) may arrive in the middle of handing over the last progress event
    from napari_trex.napari.workers import Job

    said = []
    job = Job("tracking", lambda should_stop: iter(()), on_event=lambda e: said.append(e["message"]),
              on_result=lambda result: said.append(f"summary: {result}"))
    job._yielded({"done": 1, "total": 2, "message": "tracking"})
    repaint = job.progress.refresh

    def repaint_and_deliver_the_result(*args, **kwargs):
        repaint(*args, **kwargs)
        if not job.outcome:
            job._returned(("done", "8 animals"))
    job.progress.refresh = repaint_and_deliver_the_result
    job._yielded({"done": 2, "total": 2, "message": "tracking"})
    assert said == ["tracking", "summary: 8 animals"]
    job.progress.close()


def test_napari_activity_bar_and_the_uniqueness_plot_show_consistent_numbers(qtbot):
    from napari_trex.napari.widgets.identification import UniquenessPlot
    from napari_trex.napari.workers import Job

    def nothing(should_stop):
        return iter(())

    job = Job("identification", nothing)
    job._yielded({"stage": "images", "done": 50, "total": 200, "message": "cutting images"})
    assert (job.progress.n, job.progress.total) == (50, 200)
    job._yielded({"stage": "images", "done": 200, "total": 200, "message": "cutting images"})
    job._yielded({"stage": "epoch", "done": 3, "total": 40, "message": "epoch 3"})  # a new stage
    assert (job.progress.n, job.progress.total) == (3, 40)
    job.progress.close()

    plot = UniquenessPlot()
    plot.clear(target=0.9375)
    for value in (0.937, 0.945, 0.952):
        plot.add_epoch(value)
    lo, hi = plot.value_range()
    assert 0.85 < lo < 0.937 and hi == 1.0  # zoomed: 0.937 and 0.952 no longer look flat
    assert lo < plot.target < hi
