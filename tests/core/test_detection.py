"""Detection: the background, which pixels are animals, and the properties of each blob."""

from __future__ import annotations

import numpy as np
import pytest
from imageio import v3 as iio

from napari_trex.core.background import combine, estimate_background
from napari_trex.core.datasets import generate
from napari_trex.core.detection import DetectionParams, detect_frame
from napari_trex.core.errors import NapariTrexError
from napari_trex.core.pipeline import track_video
from napari_trex.core.settings import Settings
from napari_trex.core.video import ArrayVideo


def test_background_methods_remove_moving_animals():
    synthetic = generate(n_individuals=4, n_frames=200, size=256, seed=3, body_length=18)
    video = ArrayVideo(synthetic.frames, 25)
    truth = synthetic.background
    for method in ("mode", "max"):  # dark animals on a light background
        background = estimate_background(video, 100, method)
        inside = truth > 150  # the arena, away from the dark ring
        error = np.abs(background - truth)[inside]
        assert np.percentile(error, 99) < (16 if method == "max" else 8)  # max: noise tails + light drift, method
    stack = np.array([[[1, 5]], [[1, 5]], [[2, 9]]], np.uint8)
    assert combine(stack, "mode").tolist() == [[1, 5]]
    assert combine(stack, "min").tolist() == [[1, 5]] and combine(stack, "max").tolist() == [[2, 9]]


def _frame_with(rectangles, size=64, value=200):
    frame = np.zeros((size, size), np.uint8)
    for y0, y1, x0, x1 in rectangles:
        frame[y0:y1, x0:x1] = value
    return frame


def test_blob_properties_and_trex_blob_id():
    frame = _frame_with([(10, 15, 20, 30), (40, 60, 40, 44)])
    params = DetectionParams(threshold=15)
    table, _ = detect_frame(frame, np.zeros_like(frame), params, frame_index=7)
    assert table["frame"].tolist() == [7, 7]
    assert table["area"].tolist() == [50, 80]
    assert np.allclose(table["x"], [24.5, 41.5]) and np.allclose(table["y"], [12, 49.5])
    assert np.isclose(table["angle"][0], 0) and np.isclose(abs(table["angle"][1]), np.pi / 2)
    # (mid-x of the first line) << 20 | (its y) << 8 | (number of lines)
    assert table["blob_id"][0] == (24 << 20) | (10 << 8) | 5
    assert [table[k][1] for k in ("y0", "x0", "y1", "x1")] == [40, 40, 60, 44]


def test_polygons_crop_and_size_prefilter():
    frame = _frame_with([(10, 15, 10, 15), (40, 45, 40, 45), (30, 31, 30, 31)])
    bg = np.zeros_like(frame)
    base = DetectionParams(threshold=15, prefilter_px=(3, np.inf))
    assert len(detect_frame(frame, bg, base)[0]["x"]) == 2  # the single pixel is noise
    square = np.array([[0, 0], [30, 0], [30, 30], [0, 30]], float)
    include = DetectionParams(threshold=15, include=(square,))
    assert detect_frame(frame, bg, include)[0]["x"].tolist() == [12.0]
    ignore = DetectionParams(threshold=15, ignore=(square,), prefilter_px=(3, np.inf))
    assert detect_frame(frame, bg, ignore)[0]["x"].tolist() == [42.0]
    crop = DetectionParams(threshold=15, crop=(0, 0, 32, 32))
    assert detect_frame(frame, bg, crop)[0]["x"].tolist() == [12.0]


def test_a_user_supplied_background_image_is_used(tmp_path):
    synthetic = generate(n_individuals=2, n_frames=60, size=128, seed=5, body_length=16)
    path = tmp_path / "empty_arena.png"
    iio.imwrite(path, np.clip(np.rint(synthetic.background), 0, 255).astype(np.uint8))
    settings = Settings().updated(track_max_individuals=2, background_image=str(path),
                                  auto_minmax_size=True, track_max_speed=30.0)
    run = track_video(ArrayVideo(synthetic.frames, 25), settings)
    assert np.abs(run.background - synthetic.background).max() <= 0.5
    assert (run.result.assignment >= 0).mean() > 0.9
    iio.imwrite(tmp_path / "small.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(NapariTrexError, match="10x10 px"):
        track_video(ArrayVideo(synthetic.frames, 25),
                    settings.updated(background_image=str(tmp_path / "small.png")))


def test_default_sizes_and_speed_that_miss_the_animals_on_a_guessed_scale_are_measured_instead():
    # a user sets only the number of animals: the default blob_size_ranges [0.1, 3] cm² at the
    # guessed 30 cm / 128 px miss these animals (3.5 cm²), the default 10 cm/s is 2 px per frame
    synthetic = generate(n_individuals=2, n_frames=40, size=128, seed=5, body_length=16)
    run = track_video(ArrayVideo(synthetic.frames, 25), Settings().updated(track_max_individuals=2))
    assert run.auto.warnings == []
    assert set(run.auto.replaced_defaults) == {"blob_size_ranges", "track_max_speed"}
    lo, hi = run.settings.blob_size_ranges[0]
    assert lo < 3.5 < hi and run.settings.track_max_speed > 10 * 1.5
    notes = "\n".join(run.auto.describe())
    assert "the default [[0.1, 3.0]] cm² on the guessed scale is smaller than the animals" in notes
    assert "estimated track_max_speed" in notes and "the default 10 cm/s" in notes
    assert (run.result.assignment >= 0).mean() > 0.9
    # after they part (the first frames they touch) each animal is one tracklet to the end
    assert min(sorted(run.result.tracklets.length)[-2:]) >= 30


def test_default_sizes_larger_than_small_animals_on_a_guessed_scale_are_measured_instead():
    # animals 7 px long in a 400 px frame: ~0.05 cm² at the guessed scale, below the default
    # 0.1 cm². Calibrated to the same scale, the default is the user's statement: most
    # animal-frames are lost, and the warning says why
    synthetic = generate(n_individuals=3, n_frames=40, size=400, seed=5, body_length=7.0)
    video = ArrayVideo(synthetic.frames, 25)
    run = track_video(video, Settings().updated(track_max_individuals=3))
    assert list(run.auto.replaced_defaults) == ["blob_size_ranges"] and run.auto.warnings == []
    assert "is larger than the animals" in run.auto.replaced_defaults["blob_size_ranges"]
    assert run.settings.blob_size_ranges[0][0] < 0.05 and (run.result.assignment >= 0).mean() > 0.95
    calibrated = track_video(video, Settings().updated(track_max_individuals=3, cm_per_pixel=30 / 400))
    assert (calibrated.result.assignment >= 0).mean() < 0.5
    assert any("show 3 animals within blob_size_ranges" in w for w in calibrated.auto.warnings)


def test_default_sizes_are_kept_for_a_crowd_that_touches_most_of_the_time():
    # 10 animals that cluster: all 10 apart in few frames, as with sizes that miss them, but the
    # animals fit the default sizes; sizes measured here would take fragments for animals
    from napari_trex.core.background import background_for
    from napari_trex.core.pipeline import estimate_parameters

    crowd = generate(n_individuals=10, n_frames=120, seed=1, realistic=True, body_length=40.0,
                     sociality=0.6)
    samples = crowd.frames[::2]
    settings = Settings().updated(track_max_individuals=10, track_max_speed=30.0)
    used, auto = estimate_parameters(samples, background_for(samples, settings), settings)
    assert used.blob_size_ranges == settings.blob_size_ranges and not auto.replaced_defaults
    assert any("show 10 animals within blob_size_ranges" in w for w in auto.warnings)
    measured, _ = estimate_parameters(samples, background_for(samples, settings),
                                      settings.updated(auto_minmax_size=True))
    assert measured.blob_size_ranges[0][0] < 0.5 * settings.blob_size_ranges[0][0]


def _four_animals(n_frames: int = 30) -> np.ndarray:
    """4 dark animals of 120 px, apart from each other, moving along rows."""
    frames = np.full((n_frames, 120, 160), 200, np.uint8)
    for f, frame in enumerate(frames):
        for k in range(4):
            x, y = 10 + (7 * f + 37 * k) % 120, 8 + 28 * k
            frame[y:y + 6, x:x + 20] = 60
    return frames


def _animals_with_a_faint_shadow() -> np.ndarray:
    """:func:`_four_animals`; in every third frame one casts a faint shadow (17 grey levels
    below the background) joined to its body: at the default threshold (15) that animal's blob
    is 270 px, more than two animals' area."""
    frames = _four_animals()
    for f, frame in enumerate(frames):
        if f % 3 == 0:
            x = 10 + (7 * f) % 120
            frame[14:24, x:x + 15] = 183
    return frames


def test_a_touching_pair_beside_a_speck_is_not_measured_as_one_animal():
    # zebrafish at a low threshold: in some frames two fish touch while a cut-off fin or a
    # speck lies elsewhere, so the frame still shows N blobs in the size range; the pair's
    # blob must not count as one animal, or it raises the size at which a blob holds several
    # animals above the pair itself and the tracker follows two fish as one
    from napari_trex.core.background import background_for
    from napari_trex.core.pipeline import estimate_parameters

    frames = _four_animals()
    for f, frame in enumerate(frames):
        if f % 3 == 0:  # animal 1 lies against animal 0 (240 px), a 40 px speck elsewhere
            frame[8:14, :] = 200
            frame[36:42, :] = 200
            x = 10 + (7 * f) % 120
            frame[8:20, x:x + 20] = 60
            frame[60:65, 140:148] = 60
    settings = Settings().updated(track_max_individuals=4, cm_per_pixel=1.0,
                                  blob_size_ranges=[[10, 1000]])
    _, auto = estimate_parameters(frames, background_for(frames, settings), settings)
    assert 0.9 * 120 < auto.reference_area_px < 1.1 * 120
    assert 120 < auto.merged_area_px < 240


def test_a_default_threshold_that_joins_shadows_to_animals_is_raised_until_pairs_show():
    # zebrafish test_B at the default threshold: a fish with its reflection at the wall is as
    # large as two fish touching, so touching fish were followed as one (94 % agreement with
    # idtracker.ai); the first threshold that tells them apart is used, and said why
    from napari_trex.core.background import background_for
    from napari_trex.core.pipeline import estimate_parameters
    from napari_trex.core.workflow import same_tracking

    frames = _animals_with_a_faint_shadow()
    settings = Settings().updated(track_max_individuals=4, cm_per_pixel=1.0,
                                  blob_size_ranges=[[10, 1000]])
    used, auto = estimate_parameters(frames, background_for(frames, settings), settings)
    assert used.threshold == 20 and auto.threshold == 20
    assert 0.9 * 120 < auto.reference_area_px < 1.1 * 120 and auto.merged_area_px < 240
    assert "two touching animals would be taken for one" in auto.replaced_defaults["threshold"]
    assert any(line.startswith("estimated threshold = 20") for line in auto.describe())
    # the same request (still the default) is the same tracking; a threshold the user sets is
    # used as it is, and is another tracking
    assert same_tracking(settings, used, auto.replaced_defaults)
    mine = settings.updated(threshold=12)
    assert not same_tracking(mine, used, auto.replaced_defaults)
    kept, told = estimate_parameters(frames, background_for(frames, mine), mine)
    assert kept.threshold == 12 and "threshold" not in told.replaced_defaults
    assert told.merged_area_px > 2 * told.reference_area_px


def test_sizes_the_user_set_that_miss_the_animals_are_reported_not_replaced():
    synthetic = generate(n_individuals=2, n_frames=40, size=128, seed=5, body_length=16)
    video = ArrayVideo(synthetic.frames, 25)
    mine = Settings().updated(track_max_individuals=2, blob_size_ranges=[[0.1, 2.5]])
    run = track_video(video, mine)
    assert run.settings.blob_size_ranges == [(0.1, 2.5)] and not run.auto.replaced_defaults
    assert any("blob_size_ranges" in w and "auto_minmax_size" in w for w in run.auto.warnings)
    # a calibrated scale makes the defaults a statement about the animals: warned, not replaced
    calibrated = track_video(video, Settings().updated(track_max_individuals=2, cm_per_pixel=30 / 128))
    assert not calibrated.auto.replaced_defaults
    assert any("blob_size_ranges" in w for w in calibrated.auto.warnings)
    good = track_video(video, mine.updated(auto_minmax_size=True, track_max_speed=2.0))
    assert not [w for w in good.auto.warnings if "blob_size_ranges" in w]
    # what is left is the speed the user set, 0.4 px per frame at this scale, named as such
    assert [w for w in good.auto.warnings if "Set track_max_speed" in w] == good.auto.warnings != []
    assert good.settings.track_max_speed == 2.0


def _reference_blobs(mask: np.ndarray, diff: np.ndarray) -> dict[str, np.ndarray]:
    """Blob properties the slow way: a label image (ndimage) and per-pixel sums."""
    from scipy import ndimage

    from napari_trex.core.detection import region_properties

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    return region_properties(labels, n, diff)


def test_detection_on_horizontal_lines_matches_a_label_image():
    # random specks, thin lines, a ring (a hole), touching diagonals, blobs at the frame edges
    rng = np.random.default_rng(3)
    frame = np.zeros((80, 96), np.uint8)
    frame[rng.random(frame.shape) > 0.93] = 90
    frame[10:30, 10:30] = 120
    frame[15:25, 15:25] = 0  # a ring
    frame[40, 0:96] = 200  # a line across the whole width
    for k in range(12):  # a diagonal: 8-connected only
        frame[50 + k, 60 + k] = 150
    frame[70:80, 0:8] = 60
    frame[0:5, 90:96] = 180
    diff = frame  # background 0
    params = DetectionParams(threshold=30, prefilter_px=(1, np.inf))
    table, _ = detect_frame(frame, np.zeros_like(frame), params)
    reference = _reference_blobs(frame >= 30, diff)
    for key in ("x", "y", "area", "angle", "major", "minor", "intensity", "y0", "x0", "y1", "x1",
                "blob_id"):
        assert np.allclose(table[key], reference[key]), key


def test_the_compiled_labelling_numbers_blobs_like_a_label_image():
    """Lines found eight pixels at a time and joined by a union-find: on random masks of any
    width (not only multiples of eight), runs at both edges, a full and an empty frame, every
    line's blob is the one ndimage.label (8-connected, numbered in raster order) gives."""
    from scipy import ndimage

    from napari_trex.core.lines import label_lines

    rng = np.random.default_rng(5)
    masks = [rng.random((h, w)) < p for h, w, p in
             [(40, 64, 0.02), (33, 61, 0.3), (17, 9, 0.6), (50, 100, 0.5), (1, 13, 0.5), (21, 7, 0.9)]]
    masks += [np.zeros((5, 16), bool), np.ones((4, 11), bool)]
    for mask in masks:
        y, x0, x1, blob, n = label_lines(mask, 0)
        labels, expected = ndimage.label(mask, structure=np.ones((3, 3), bool))
        assert n == expected
        rebuilt = np.zeros(mask.shape, np.int64)
        for row, a, b, k in zip(y, x0, x1, blob):
            rebuilt[row, a: b + 1] = k + 1
        assert np.array_equal(rebuilt, labels)
        assert np.array_equal(np.lexsort((x0, y)), np.arange(len(y)))  # raster order


def test_isolated_short_lines_are_left_out_as_specks_and_nothing_else():
    from napari_trex.core.lines import label_lines

    mask = np.zeros((9, 20), bool)
    mask[1, 2:4] = True  # 2 px, alone: a speck
    mask[1, 10:15] = True  # 5 px, alone: kept (long enough)
    mask[4, 2:4] = True  # 2 px touching the line below diagonally: kept
    mask[5, 4] = True
    mask[8, 18:20] = True  # 2 px at the corner: a speck
    y, x0, x1, blob, n = label_lines(mask, 3)
    assert list(zip(y, x0, x1)) == [(1, 10, 14), (4, 2, 3), (5, 4, 4)]
    assert list(blob) == [0, 1, 1] and n == 2
    assert len(label_lines(mask, 0)[0]) == 5  # nothing dropped without a speck size


def test_blobs_that_may_hold_several_animals_keep_their_pixels():
    frame = _frame_with([(10, 30, 10, 22), (50, 54, 50, 54)])
    frame[12:14, 12:14] = 60  # the pixels keep their difference values
    params = DetectionParams(threshold=15, keep_pixels_above_px=100)
    table, pixels = detect_frame(frame, np.zeros_like(frame), params)
    assert list(pixels) == [0]  # only the big blob
    top, left, crop = pixels[0]
    assert (top, left) == (10, 10) and crop.shape == (20, 12)
    assert crop[2, 2] == 60 and crop[10, 5] == 200


def test_a_resting_animal_stays_out_of_the_background():
    # one dark square rests in the same place in 80 % of the frames, another keeps moving
    frames = np.full((100, 96, 96), 200, np.uint8)
    for t in range(100):
        x = 10 + (t % 70)
        frames[t, 70:76, x:x + 6] = 60
        rest = (20, 20) if t < 80 else (20 + (t - 80), 50)
        frames[t, rest[0]:rest[0] + 6, rest[1]:rest[1] + 6] = 60
    from napari_trex.core.background import animal_polarity, background_from_samples

    assert animal_polarity(frames, 15) == -1
    for method in ("mode", "mean"):
        background, _ = background_from_samples(frames, method, 15)
        assert np.abs(background - 200).max() <= 1, method  # neither animal is in it
    naive = combine(frames, "mode")
    assert naive[22, 22] == 60  # what TRex's plain mode does: the resting animal is background
    light = 255 - frames
    assert animal_polarity(light, 15) == 1
    assert np.abs(background_from_samples(light, "mode", 15)[0] - 55).max() <= 1


@pytest.mark.parametrize("processes", [False, True])
def test_detection_workers_started_early_serve_a_stopped_stream_and_the_next_one(processes):
    from napari_trex.core.detection import detect_video, detection_workers, streamed_detection

    synthetic = generate(n_individuals=3, n_frames=60, size=128, seed=2)
    video = ArrayVideo(synthetic.frames, 25)
    background = estimate_background(video, 20, "mode")
    params = DetectionParams(threshold=15)
    expected = detect_video(video, background, params, chunk_frames=20, scheduler="synchronous")
    with detection_workers(processes, 2) as pool:
        with pytest.raises(RuntimeError, match="user stopped"):
            with streamed_detection(video, background, params, chunk_frames=20, pool=pool) as stream:
                stream.frame(0)
                raise RuntimeError("user stopped")
        with streamed_detection(video, background, params, chunk_frames=20, pool=pool) as stream:
            again = stream.joined()
    assert np.array_equal(again["x"], expected["x"]) and np.array_equal(again["frame"], expected["frame"])


def test_the_preview_tells_animals_fragments_and_specks_apart():
    from napari_trex.core.detection import blob_census, preview_labels

    frame = np.zeros((80, 80), np.uint8)
    yy, xx = np.mgrid[:80, :80]
    for cy, cx in ((20, 20), (55, 50)):  # two animals of ~200 px
        frame[((yy - cy) / 6) ** 2 + ((xx - cx) / 11) ** 2 <= 1] = 200
    frame[40:43, 5:13] = 200  # a leg that came off at the threshold: 24 px
    for y, x in ((2, 70), (10, 60), (70, 5), (75, 75), (30, 70)):
        frame[y, x] = 200  # sensor specks
    params = DetectionParams(threshold=15, size_ranges_px=((100.0, 400.0),), prefilter_px=(3.0, np.inf))
    labels, counts = preview_labels(frame, np.zeros_like(frame), params)
    assert counts == {"animal-sized": 2, "fragments": 1, "specks": 5, "too large": 0}
    assert set(np.unique(labels)) == {0, 1, 3, 4}
    areas, = blob_census(frame[None], np.zeros_like(frame), params)
    assert sorted(areas.tolist())[:5] == [1.0] * 5 and len(areas) == 8


@pytest.mark.parametrize("mode", ["absolute", "darker", "no difference"])
def test_detection_in_a_videos_coded_values_finds_the_same_blobs_and_pixels(tmp_path, mode):
    # an H.264 video stores limited-range luma; detection thresholds those values directly and
    # converts only the pixels it keeps: every blob, every kept pixel must be as if it had
    # converted the whole frame (noise near the threshold, both ends of the grey range)
    from napari_trex.core.detection import detect_range
    from napari_trex.core.video import open_video, write_video

    rng = np.random.default_rng(1)
    level = 12 if mode == "no difference" else 128  # there the frame is thresholded: dark arena
    frames = np.clip(rng.normal(level, 12, (6, 96, 128)), 0, 255).astype(np.uint8)
    frames[:, 20:44, 30:60] = 40  # a dark animal
    frames[:, 60:70, 80:120] = 250  # a bright one
    frames[:, :, :4] = 0
    path = write_video(tmp_path / "noisy.mp4", frames, 25)
    with open_video(path, cache_mb=0) as video:
        coded = [(i, f, lut) for i, f, lut in video.coded_frames()]
        assert all(lut is not None for _, _, lut in coded)  # the video's values need converting
        grey = [frame for _, frame in video.frames()]
        background = np.full((96, 128), float(level))
        params = DetectionParams(threshold=20, absolute=mode != "darker",
                                 use_difference=mode != "no difference", prefilter_px=(3, np.inf),
                                 keep_pixels_above_px=50)
        found = detect_range(video, background, params, 0, len(video))
    assert len(found) > 6
    from napari_trex.core.detection import CodedThreshold

    lut = coded[0][2]
    assert CodedThreshold.make(lut, np.full((96, 128), level, np.uint8), params) is not None
    # a threshold of 0 makes every pixel foreground: no bounds, detection converts the frames
    assert CodedThreshold.make(lut, np.full((96, 128), level, np.uint8),
                               DetectionParams(threshold=0)) is None
    for i, frame in enumerate(grey):
        table, pixels = detect_frame(frame, np.full_like(frame, level), params, i)
        rows = found.rows(i)
        for key, values in table.items():
            assert np.array_equal(found[key][rows], values.astype(found[key].dtype)), key
        assert sorted(pixels) == sorted(k - rows.start for k in found.pixels if rows.start <= k < rows.stop)
        for k, (top, left, crop) in pixels.items():
            assert found.pixels[rows.start + k][:2] == (top, left)
            assert np.array_equal(found.pixels[rows.start + k][2], crop)


def test_closing_is_the_closing_with_a_square_everywhere_in_the_frame():
    # the fast closing (separable filters) must close exactly as the square structuring element
    # does, odd and even sizes, at the frame's edges too
    from scipy import ndimage

    from napari_trex.core.detection import closing

    rng = np.random.default_rng(5)
    mask = rng.random((60, 90)) > 0.8
    mask[:3, :] = True
    mask[:, -2:] = True
    mask[20:30, 40:41] = False
    for size in range(2, 10):
        expected = ndimage.binary_closing(mask, structure=np.ones((size, size), bool))
        assert np.array_equal(closing(mask, size), expected), size
