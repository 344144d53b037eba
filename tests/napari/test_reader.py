"""Dropping files on napari: ours open lazily, others are left to other plugins."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import tifffile
from imageio import v3 as iio

from napari_trex.core.video import open_video
from napari_trex.napari import reader as reader_module
from napari_trex.napari.reader import NULL_LAYER, get_reader

from helpers import frame_number, numbered_frames


@pytest.mark.parametrize("name", ["notes.txt", "image.png", "data.csv", "missing.mp4.zip"])
def test_foreign_files_are_not_ours(tmp_path, name):
    path = tmp_path / name
    if name == "image.png":
        iio.imwrite(path, np.zeros((8, 8), np.uint8))
    else:
        path.write_text("x")
    assert get_reader(str(path)) is None


def test_single_page_tiff_and_foreign_folders_are_left_to_others(tmp_path):
    tifffile.imwrite(tmp_path / "one.tif", np.zeros((8, 8), np.uint8))
    assert get_reader(str(tmp_path / "one.tif")) is None
    (tmp_path / "store.zarr").mkdir()
    (tmp_path / "store.zarr" / ".zarray").write_text("{}")
    assert get_reader(str(tmp_path / "store.zarr")) is None
    assert get_reader([str(tmp_path / "one.tif"), str(tmp_path / "two.tif")]) is None
    assert get_reader(12345) is None  # never raises, whatever napari hands over


def test_videos_stacks_and_image_folders_are_ours(tmp_path, numbered_video):
    tifffile.imwrite(tmp_path / "stack.tif", numbered_frames(5))
    (tmp_path / "frames").mkdir()
    for i, frame in enumerate(numbered_frames(3)):
        iio.imwrite(tmp_path / "frames" / f"img{i:03d}.png", frame)
    for path in [numbered_video, tmp_path / "stack.tif", tmp_path / "frames"]:
        assert get_reader(str(path)) is not None, path


def test_reader_returns_a_lazy_layer_with_fps_and_path(numbered_video):
    [(data, meta, layer_type)] = get_reader(str(numbered_video))(str(numbered_video))
    assert layer_type == "image" and isinstance(data, da.Array)
    assert data.shape == (600, 96, 128)
    assert meta["name"] == "numbered" and meta["contrast_limits"] == (0, 255)
    assert meta["metadata"]["fps"] == 25.0 and meta["metadata"]["path"] == str(numbered_video)
    assert meta["rgb"] is False


def test_corrupt_file_becomes_a_notification_not_an_exception(tmp_path, monkeypatch):
    messages = []
    monkeypatch.setattr(reader_module, "_notify_error", messages.append)
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 1000)
    reader = get_reader(str(tmp_path / "broken.mp4"))
    assert reader(str(tmp_path / "broken.mp4")) == NULL_LAYER
    (tmp_path / "empty").mkdir()
    assert get_reader(str(tmp_path / "empty"))(str(tmp_path / "empty")) == NULL_LAYER
    assert "broken.mp4 is not a video" in messages[0] and "contains no image files" in messages[1]


def test_notification_reaches_napari():
    from napari.utils.notifications import notification_manager

    before = len(notification_manager.records)
    reader_module._notify_error("cut.mp4 is truncated")
    assert "cut.mp4 is truncated" in str(notification_manager.records[before:][-1].message)


def test_scrubbing_the_time_slider_shows_the_right_frames(numbered_video):
    from napari.components import ViewerModel

    viewer = ViewerModel()
    [layer] = viewer.open(str(numbered_video), plugin="napari-trex")
    assert isinstance(layer.data, da.Array)
    video = open_video(numbered_video)
    for t in (0, 123, 599, 250, 7):
        viewer.dims.set_current_step(0, t)
        shown = np.array([[layer.get_value((t, y, x)) for x in range(8, 124, 3)] for y in (16,)])
        expected = video.read(t)[16, 8:124:3]
        assert np.array_equal(shown[0], expected), t
        assert frame_number(video.read(t)) == t
