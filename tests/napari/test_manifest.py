"""The plugin as napari sees it: a valid manifest, a sample in File > Open Sample, a reader."""

from __future__ import annotations

import dask.array as da
import numpy as np


def test_manifest_is_valid_and_declares_reader_and_sample():
    import npe2

    manifest = npe2.PluginManifest.from_distribution("napari-trex")
    manifest.validate_imports()
    patterns = manifest.contributions.readers[0].filename_patterns
    assert {"*.mp4", "*.avi", "*.mov", "*.mkv", "*.tif"} <= set(patterns)
    assert manifest.contributions.readers[0].accepts_directories
    assert [s.key for s in manifest.contributions.sample_data] == ["synthetic_animals"]


def test_open_sample_through_the_manifest(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-trex", "synthetic_animals")
    image = viewer.layers["synthetic animals"]
    tracks = viewer.layers["ground truth"]
    assert len(layers) == 2
    assert isinstance(image.data, da.Array) and image.data.shape == (500, 512, 512)
    assert image.metadata["fps"] == 25.0 and image.metadata["ground_truth"].endswith(".csv")
    assert tracks.color_by == "identity"
    assert sorted(np.unique(tracks.features["identity"])) == [0, 1, 2, 3]
    # the ground truth sits on dark animals in the displayed frame
    viewer.dims.set_current_step(0, 100)
    rows = tracks.data[tracks.data[:, 1] == 100]
    values = [image.get_value((100, y, x)) for _, _, y, x in rows]
    background = np.median(image.data[100].compute())
    assert all(v < background - 30 for v in values)


def test_drag_and_drop_a_video(make_napari_viewer, numbered_video):
    viewer = make_napari_viewer()
    viewer.open(str(numbered_video), plugin="napari-trex")
    layer = viewer.layers["numbered"]
    assert isinstance(layer.data, da.Array) and layer.data.shape[0] == 600
    assert layer.metadata["path"] == str(numbered_video)


def test_open_video_panel_opens_in_colour_on_request(make_napari_viewer, numbered_video, monkeypatch):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-trex", "Open video")
    widget.path.value = numbered_video
    widget.color.value = True
    widget()
    layer = viewer.layers["numbered"]
    assert layer.rgb and layer.data.shape == (600, 96, 128, 3)
    assert isinstance(layer.data, da.Array)

    errors = []
    monkeypatch.setattr("napari.utils.notifications.show_error", errors.append)
    widget.path.value = numbered_video.with_name("does-not-exist.mp4")
    widget()
    assert len(viewer.layers) == 1 and "no such file" in errors[0]


def test_npe2_validate_command_passes():
    import subprocess
    import sys
    from pathlib import Path

    npe2_cli = Path(sys.executable).parent / "npe2"
    result = subprocess.run([str(npe2_cli), "validate", "napari-trex"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout
