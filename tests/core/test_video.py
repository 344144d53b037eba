"""A user opens recordings of any common kind and always gets frame i when asking for frame i."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import tifffile
from imageio import v3 as iio

from napari_trex.core import video as video_module
from napari_trex.core.errors import VideoError
from napari_trex.core.video import ImageSequence, PyAVVideo, TiffStack, open_video, write_video

from helpers import frame_number, numbered_frames


def _sequential(video):
    return [frame for _, frame in video.frames()]


def test_probe_reports_frames_fps_size_codec_duration(numbered_video):
    with open_video(numbered_video) as video:
        info = video.info
    assert (info.n_frames, info.fps, info.width, info.height) == (600, 25.0, 128, 96)
    assert info.codec == "h264" and info.kind == "video file"
    assert info.duration == pytest.approx(24.0, abs=0.1)
    assert info.keyframe_interval == 250


def test_sequential_decode_yields_every_frame_in_order(numbered_video):
    with open_video(numbered_video) as video:
        numbers = [frame_number(frame) for _, frame in video.frames()]
    assert numbers == list(range(600))


def test_seeking_gives_the_same_frame_as_sequential_decoding_with_sparse_keyframes(numbered_video):
    video = open_video(numbered_video, cache_mb=0)  # no cache: every read really seeks/decodes
    sequential = _sequential(video)
    order = list(range(600))
    random.Random(0).shuffle(order)
    for i in order[:150] + [599, 0, 249, 250, 251, 498, 1]:
        frame = video.read(i)
        assert np.array_equal(frame, sequential[i]), f"frame {i} differs"
        assert frame_number(frame) == i


@pytest.mark.parametrize("suffix", [".avi", ".mov", ".mkv"])
def test_other_containers_are_frame_exact(tmp_path, suffix):
    path = write_video(tmp_path / f"v{suffix}", numbered_frames(300), fps=30, keyframe_interval=120)
    video = open_video(path, cache_mb=0)
    sequential = _sequential(video)
    assert len(video) == len(sequential) == 300
    for i in [299, 5, 150, 119, 120, 121, 7, 240]:
        assert np.array_equal(video.read(i), sequential[i])
        assert frame_number(sequential[i]) == i


def test_variable_frame_rate_keeps_frame_indices_and_real_timestamps(vfr_video):
    path, times = vfr_video
    video = open_video(path, cache_mb=0)
    sequential = _sequential(video)
    assert len(video) == 300
    assert [frame_number(f) for f in sequential] == list(range(300))
    for i in [250, 3, 99, 100, 101, 180, 299, 0]:
        assert np.array_equal(video.read(i), sequential[i])
    assert np.allclose(video.frame_times(), times, atol=0.0015)


def test_small_forward_jumps_decode_forward_instead_of_seeking(numbered_video, monkeypatch):
    video = open_video(numbered_video, cache_mb=0)
    seeks = []
    original = video_module._Decoder._seek_before
    monkeypatch.setattr(video_module._Decoder, "_seek_before",
                        lambda self, target: (seeks.append(target), original(self, target))[1])
    for i in (300, 301, 305, 320, 400, 499):  # all after the keyframe at 250, before 500
        assert frame_number(video.read(i)) == i
    assert seeks == [300]
    video.read(100)  # backwards: must seek
    video.read(520)  # past the next keyframe: seeking is cheaper
    assert seeks == [300, 100, 520]


def test_recent_frames_come_from_the_cache(numbered_video):
    video = open_video(numbered_video)
    first = video.read(42)
    assert video.read(42) is first
    assert not first.flags.writeable  # cached frames are shared: nobody may edit them


def test_as_dask_is_lazy_and_chunked_by_memory(numbered_video, monkeypatch):
    video = open_video(numbered_video)
    decoded = []
    original = PyAVVideo._iter_range
    monkeypatch.setattr(PyAVVideo, "_iter_range",
                        lambda self, a, b: (decoded.append((a, b)), original(self, a, b))[1])
    frame_bytes = 96 * 128
    array = video.as_dask(chunk_mb=frame_bytes * 50 / 2**20)
    assert array.shape == (600, 96, 128) and array.dtype == np.uint8
    assert array.chunks[0][0] == 50
    assert decoded == []  # building the array decodes nothing
    frame = array[321].compute()
    assert frame_number(frame) == 321
    assert decoded == [(300, 350)]  # only the chunk that holds frame 321
    assert np.array_equal(array[95:105].compute(), np.stack([video.read(i) for i in range(95, 105)]))


def test_large_files_open_without_reading_the_packets(numbered_video, monkeypatch):
    calls = []
    monkeypatch.setattr(PyAVVideo, "_build_index", lambda self: calls.append(1) or None)
    monkeypatch.setattr(video_module, "INDEX_AT_OPEN_MAX_MB", 0)
    video = PyAVVideo(numbered_video)
    assert len(video) == 600 and calls == []  # the header's frame count; nothing scanned


def test_colour_on_request(numbered_video):
    video = open_video(numbered_video, color=True)
    frame = video.read(7)
    assert frame.shape == (96, 128, 3) and video.as_dask().shape == (600, 96, 128, 3)
    assert frame_number(frame) == 7


def test_video_can_be_pickled_for_dask_workers(numbered_video):
    video = open_video(numbered_video)
    video.read(3)
    clone = pickle.loads(pickle.dumps(video))
    assert np.array_equal(clone.read(333), video.read(333))


def test_folder_of_numbered_images_in_numeric_order(tmp_path):
    frames = numbered_frames(12)
    for i, frame in enumerate(frames):  # unpadded numbers: 10 must come after 9, not after 1
        iio.imwrite(tmp_path / f"frame_{i}.png", frame)
    (tmp_path / "notes.txt").write_text("not an image")
    video = open_video(tmp_path)
    assert isinstance(video, ImageSequence) and len(video) == 12
    assert [frame_number(f) for _, f in video.frames()] == list(range(12))
    assert np.array_equal(video.read(10), frames[10])
    assert video.info.fps_assumed
    assert open_video(tmp_path, fps=50).fps == 50


def test_image_folder_with_a_mismatched_frame_says_which(tmp_path):
    iio.imwrite(tmp_path / "f1.png", np.zeros((32, 32), np.uint8))
    iio.imwrite(tmp_path / "f2.png", np.zeros((16, 32), np.uint8))
    video = open_video(tmp_path)
    with pytest.raises(VideoError, match="f2.png"):
        video.read(1)


def test_multipage_tiff_grey_and_rgb(tmp_path):
    frames = numbered_frames(20)
    tifffile.imwrite(tmp_path / "stack.tif", frames)
    video = open_video(tmp_path / "stack.tif")
    assert isinstance(video, TiffStack) and len(video) == 20
    assert all(np.array_equal(f, frames[i]) for i, f in video.frames())
    rgb = np.repeat(frames[..., None], 3, axis=3)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    grey = open_video(tmp_path / "rgb.tif")
    assert grey.frame_shape == (96, 128) and frame_number(grey.read(13)) == 13
    assert open_video(tmp_path / "rgb.tif", color=True).read(13).shape == (96, 128, 3)


def _bad_input(folder, kind):
    if kind == "missing":
        return folder / "missing.mp4"
    if kind == "empty-folder":
        (folder / "folder").mkdir()
        return folder / "folder"
    name, content = {"empty-file": ("empty.mp4", ""), "not-a-video": ("text.avi", "hello"),
                     "bad-tiff": ("bad.tif", "nope")}[kind]
    (folder / name).write_text(content)
    return folder / name


@pytest.mark.parametrize(
    ("kind", "message"),
    [("missing", "no such file"), ("empty-file", "empty"), ("not-a-video", "not a video"),
     ("empty-folder", "contains no image files"), ("bad-tiff", "not a readable TIFF")],
)
def test_bad_input_gives_a_clear_error(tmp_path, kind, message):
    with pytest.raises(VideoError, match=message):
        open_video(_bad_input(tmp_path, kind))


def test_truncated_video_without_header_is_refused(numbered_video, tmp_path):
    data = numbered_video.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])  # mp4 index ('moov') is at the end
    with pytest.raises(VideoError, match="not a video FFmpeg can read"):
        open_video(tmp_path / "cut.mp4")


def test_truncated_video_with_header_reports_the_frames_it_really_has(tmp_path):
    path = write_video(tmp_path / "v.avi", numbered_frames(200), fps=25, keyframe_interval=50)
    data = path.read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) * 6 // 10])
    video = open_video(tmp_path / "cut.avi")
    assert 0 < len(video) < 200
    assert any("header says 200 frames" in w for w in video.info.warnings)
    numbers = [frame_number(f) for _, f in video.frames()]
    assert len(numbers) == len(video)
    assert numbers[:-1] == list(range(len(video) - 1))  # the last, cut packet may be concealed
    lazy = open_video(tmp_path / "cut.avi", index_now=False)
    assert len(lazy) == 200  # only the header is known ...
    with pytest.raises(VideoError, match="truncated or corrupt"):
        lazy.read_range(0, 200)  # ... and reading past the real end says so
    shown = lazy.as_dask()[150:200].compute()  # napari shows black frames, never crashes
    assert shown.shape == (50, 96, 128)


def test_write_video_streams_frames_from_a_generator(tmp_path):
    frames = numbered_frames(30)
    path = write_video(tmp_path / "gen.mkv", (f for f in frames), fps=10, keyframe_interval=7)
    video = open_video(path)
    assert len(video) == 30 and video.fps == 10
    assert [frame_number(f) for _, f in video.frames()] == list(range(30))
    with pytest.raises(ValueError, match="one timestamp per frame"):
        write_video(tmp_path / "bad.mp4", frames, timestamps=[0.0, 0.1])
    assert not (tmp_path / "bad.mp4").exists()


def test_grey_frames_from_the_luma_plane_are_what_ffmpeg_converts(tmp_path):
    # the fast path (luma plane + limited-range table) must give swscale's grey, pixel for pixel
    import av

    rng = np.random.default_rng(0)
    frames = np.clip(rng.normal(128, 70, (12, 64, 96)), 0, 255).astype(np.uint8)
    frames[:, :, :8] = 0
    frames[:, :, -8:] = 255  # both ends of the range
    path = write_video(tmp_path / "grey.mp4", frames, 25)
    with open_video(path, cache_mb=0) as video:
        fast = np.stack([frame for _, frame in video.frames()] + [video.read(5)])
    with av.open(str(path)) as container:
        decoded = list(container.decode(video=0))
        assert all(video_module._luma(f) is not None for f in decoded)  # the fast path was taken
        slow = [f.to_ndarray(format="gray") for f in decoded]
    assert np.array_equal(fast[:-1], np.stack(slow)) and np.array_equal(fast[-1], slow[5])
