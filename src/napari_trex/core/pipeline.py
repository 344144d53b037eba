"""Orchestration: video → background → (automatic parameters) → detection → tracking.

The same functions run behind the command line, the dock widgets and batches on dask. Long
steps report ``progress(done, total, message)`` and poll ``should_stop()``; a cancelled run
raises :class:`~napari_trex.core.errors.Cancelled` before anything is written, so the
previous results in the output folder stay intact.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import numpy as np

from .background import background_for, sample_frames
from .detection import (DetectionParams, chunk_ranges, detect_frame, detect_video,
                        detection_workers, streamed_detection)
from .errors import NapariTrexError
from .settings import Settings
from .model import AutoParameters, TrackingRun
from .tracking import TrackingParams
from .tracking import track as link_tracklets
from .tracklets import AMBIGUOUS, WEIRD_DISTANCE, global_segments
from .video import PyAVVideo, Video, open_video

Progress = Callable[..., None]
NOISE_FLOOR_PX = 10.0


def _stage(progress: Progress | None, message: str) -> Progress | None:
    if progress is None:
        return None
    return lambda done, total, *_: progress(done, total, message)


def estimate_parameters(samples: np.ndarray, background: np.ndarray, settings: Settings,
                        ) -> tuple[Settings, AutoParameters]:
    """Fill in ``track_max_individuals`` = 0 and automatic sizes (TRex's auto_number_individuals
    and auto_minmax_size) by counting and measuring the blobs of sampled frames.

    TRex samples ~500 frames for this; napari-trex reuses the ``average_samples`` frames
    already read for the background, which saves a pass over the video.

    The default ``blob_size_ranges`` on a guessed scale (see :meth:`Settings.guessed_default`)
    that is smaller than the animals (mice 90 px long in a 640 px frame are ~6 cm² against the
    default 0.1-3 cm²: 23 % of their animal-frames right) or larger (8 animals 12 px long in a
    900 px frame, 0.05 cm²: not one tracklet) is replaced by sizes measured as with
    ``auto_minmax_size``, when those raise no warning (in the realistic generator's textured
    arena the sizes measured for such small animals also admit specks, so there the warning
    stays). Not where the N animals are merely seen apart in few frames: that is also what
    animals that touch most of the time look like (a crowd of 10 with sizes measured took
    fragments for animals, 21 of them); the warning then says so.

    A default threshold at which single animals reach twice the typical animal's area (a
    reflection or shadow joined to a body: zebrafish test_B at 15) would let two touching
    animals pass for one; the first threshold of :data:`THRESHOLD_LADDER` at which that stops
    and nothing is warned replaces it, on any scale (grey levels have none), and says why.
    """
    fitted, auto = _sizes_estimated(samples, background, settings)
    if not (_pairs_pass_for_one(auto) and settings.measured_default("threshold")):
        return fitted, auto
    at = max(settings.threshold, settings.track_threshold)
    for threshold in (t for t in THRESHOLD_LADDER if t > at):
        try:
            higher, instead = _sizes_estimated(samples, background,
                                               settings.updated(threshold=threshold))
        except NapariTrexError:  # the animals fade away before pairs and single ones part
            break
        if not _pairs_pass_for_one(instead) and not instead.warnings:
            instead.replaced_defaults["threshold"] = (
                f"at the default {at}, blobs of up to {auto.merged_area_px:.0f} px were seen in "
                f"frames that show every animal apart (one animal {auto.reference_area_px:.0f} "
                "px; perhaps a shadow or reflection joined to it), so two touching animals would "
                f"be taken for one; at {threshold} one animal is {instead.reference_area_px:.0f} "
                f"px and two touching ones {2 * instead.reference_area_px:.0f}, told apart. Set "
                "threshold to choose")
            instead.threshold = threshold
            return higher, instead
    return fitted, auto


#: Thresholds tried, lowest first, where the default lets two touching animals pass for one
THRESHOLD_LADDER = (20, 25, 30, 40, 50, 60)
#: ... that is, where a blob of this many animals' area can still be a single animal
PAIR_AREA = 2.0


def _pairs_pass_for_one(auto: AutoParameters) -> bool:
    """Whether a blob of two touching animals would be taken for one (see MERGED_LARGEST)."""
    return 0 < auto.reference_area_px and PAIR_AREA * auto.reference_area_px <= auto.merged_area_px


def _sizes_estimated(samples: np.ndarray, background: np.ndarray, settings: Settings,
                     ) -> tuple[Settings, AutoParameters]:
    """:func:`estimate_parameters` at the threshold the settings give."""
    auto_n = settings.track_max_individuals == 0
    auto_size = settings.auto_minmax_size or (
        auto_n and settings.blob_size_ranges == Settings().blob_size_ranges)
    fitted, auto, misses = _estimate_parameters(samples, background, settings, auto_size)
    if misses and not auto_size and settings.guessed_default("blob_size_ranges"):
        try:
            measured, instead, _ = _estimate_parameters(samples, background, settings, True)
        except NapariTrexError:  # nothing animal-like to measure: the warning stands
            return fitted, auto
        if not instead.warnings:  # (sizes that miss always come with a warning)
            default = [list(r) for r in settings.blob_size_ranges]
            instead.replaced_defaults["blob_size_ranges"] = (
                f"the default {default} cm² on the guessed scale {misses}; set blob_size_ranges "
                "or calibrate cm_per_pixel to choose")
            return measured, instead
    return fitted, auto


def _estimate_parameters(samples: np.ndarray, background: np.ndarray, settings: Settings,
                         auto_size: bool) -> tuple[Settings, AutoParameters, str]:
    """:func:`estimate_parameters` with sizes measured (``auto_size``) or as set, and why the
    sizes miss the animals (empty when they do not)."""
    width = samples.shape[2]
    px_area = settings.pixel_size_cm(width) ** 2
    auto_n = settings.track_max_individuals == 0
    misses = ""
    probe = DetectionParams.from_settings(settings, samples.shape[1:])
    if auto_size:
        probe = dataclasses.replace(probe, size_ranges_px=((NOISE_FLOOR_PX, np.inf),),
                                    prefilter_px=(NOISE_FLOOR_PX, np.inf), keep_pixels_above_px=np.inf)
    else:
        probe = dataclasses.replace(probe, keep_pixels_above_px=np.inf)
    bg = np.clip(np.rint(background), 0, 255).astype(np.uint8)
    areas_per_frame = [detect_frame(frame, bg, probe)[0]["area"] for frame in samples]
    auto = AutoParameters(sampled_frames=len(samples))
    if auto_size:
        animals = _animal_areas(areas_per_frame, settings.track_max_individuals)
        if len(animals) == 0:
            raise NapariTrexError("no animals found in the sampled frames: lower `threshold`, or "
                                  "check that the animals differ from the background")
        p25, p75 = np.percentile(animals, [25, 75])
        ranges_px = [(0.25 * p25, 1.75 * p75)]
        # 4 significant digits: what the panel's field and the saved settings show
        auto.blob_size_ranges = [(float(f"{lo * px_area:.4g}"), float(f"{hi * px_area:.4g}"))
                                 for lo, hi in ranges_px]
        settings = settings.updated(blob_size_ranges=auto.blob_size_ranges)
    ranges_px = [(lo / px_area, hi / px_area) for lo, hi in settings.blob_size_ranges]

    def in_range(a: np.ndarray) -> np.ndarray:
        return np.any([(a >= lo) & (a <= hi) for lo, hi in ranges_px], axis=0)

    single = _single_animal_areas(areas_per_frame, in_range, settings.track_max_individuals)
    if len(single):
        p05, p50, p99 = np.percentile(single, [5, 50, 99])
        auto.reference_area_px = float(p50)
        auto.merged_area_px = float(max(MERGED_SMALLEST * p05, MERGED_LARGEST * p99))
        auto.smallest_area_px = FRAGMENT_SHARE * float(p05)
    counts = [_count_animals(a, in_range, auto.reference_area_px, auto.merged_area_px,
                             auto.smallest_area_px) for a in areas_per_frame]
    if not auto_n and counts:
        n = settings.track_max_individuals
        share = float(np.mean(np.array(counts) >= n))
        largest = _animal_areas(areas_per_frame, n)
        typical_px = float(np.median(largest)) if len(largest) else 0.0
        too_large = typical_px > max(hi for _, hi in ranges_px)
        if too_large:
            # noise specks then fill the range and the counts: the warnings below would
            # blame the number of animals (the flies at cm_per_pixel = 1 got "more animals")
            # what that means depends on how many still fit (flies of different sizes: most):
            # the tracker follows an animal up to the merge size learnt from those that fit
            outside = float(np.mean(~in_range(largest)))
            misses = f"is smaller than the animals (the {n} largest blobs are typically " \
                f"{typical_px * px_area:.4g} cm², {outside:.0%} of them outside it)"
            what = ("the animals are not tracked" if outside > 0.95 or auto.merged_area_px <= 0 else
                    f"{outside:.0%} of them lie outside it; animals are still followed up to "
                    f"{auto.merged_area_px:.0f} px (from those inside), larger blobs are taken for "
                    "several animals touching")
            auto.warnings.append(
                f"the {n} largest blobs of the sampled frames are typically "
                f"{typical_px * px_area:.4g} cm² ({typical_px:.0f} px at "
                f"{settings.pixel_size_cm(width):.3g} cm per px), larger than blob_size_ranges "
                f"{[list(r) for r in settings.blob_size_ranges]} cm² allows: {what}. "
                "Check cm_per_pixel, widen blob_size_ranges, or set auto_minmax_size = true")
        elif share < 0.5:
            typical = f"{typical_px * px_area:.3g} cm²" if len(largest) else "none found"
            if len(largest) and typical_px < min(lo for lo, _ in ranges_px):
                misses = f"is larger than the animals (the {n} largest blobs are typically {typical})"
            auto.warnings.append(
                f"only {share:.0%} of the sampled frames show {n} animals within blob_size_ranges "
                f"{[list(r) for r in settings.blob_size_ranges]} cm² (the {n} largest blobs are "
                f"typically {typical}); check blob_size_ranges, cm_per_pixel and threshold, or "
                "set auto_minmax_size = true")
        over = np.array(counts) > n
        if not too_large and over.mean() >= MORE_ANIMALS_SHARE:
            auto.warnings.append(
                f"track_max_individuals = {n}, but {over.mean():.0%} of the sampled frames show more "
                f"animals (up to {max(counts)}): only {n} are tracked, the others are in no "
                "tracklet. Raise track_max_individuals, or narrow blob_size_ranges / raise "
                "threshold if those blobs are not animals")
    if auto_n:
        n = int(round(np.percentile(counts, 95))) if counts else 0
        if n < 1:
            raise NapariTrexError("no animals of the expected size found: set `track_max_individuals` "
                                  "and check `blob_size_ranges` and `threshold`")
        auto.n_individuals = n
        settings = settings.updated(track_max_individuals=n)
    return settings, auto, misses


#: A blob holds several animals when it is at least MERGED_SMALLEST x the smallest animals
#: (5th percentile of single-animal areas: two small ones touching) *and* MERGED_LARGEST x the
#: largest (99th percentile: beyond what any one animal's posture reached in the samples).
MERGED_SMALLEST, MERGED_LARGEST = 1.6, 1.25
#: A blob below this share of the smallest animals (5th percentile) is more likely a fragment
#: (a tail or a leg cut off by the threshold) than an animal, even inside blob_size_ranges.
FRAGMENT_SHARE = 0.5
#: Warn that track_max_individuals is too small when at least this share of the sampled frames
#: shows more animals (fewer: a tail cut off by the threshold, a merge counted as two).
MORE_ANIMALS_SHARE = 0.25


def _single_animal_areas(areas_per_frame: list[np.ndarray], in_range: Callable[[np.ndarray], np.ndarray],
                         n_individuals: int) -> np.ndarray:
    """Areas of blobs that are one animal each: from sampled frames that show exactly N animal-
    sized blobs (no merge there), or, without enough such frames, the N largest in range."""
    largest = _animal_areas(areas_per_frame, n_individuals)
    largest = largest[in_range(largest)] if len(largest) else largest
    if n_individuals > 0:
        # a speck or a cut-off tail is not an animal: counted, a frame of two touching animals
        # and a fragment would pass for N apart, and the merged blob for one animal (zebrafish
        # test_A at threshold 15: blobs of two fish, 1200 px, taken for one, 610 px typical)
        floor = FRAGMENT_SHARE * float(np.median(largest)) if len(largest) else 0.0
        animal = [a[in_range(a) & (a >= floor)] for a in areas_per_frame if len(a)]
        clean = [a for a in animal if len(a) == n_individuals]
        if len(clean) >= 5:
            return np.concatenate(clean)
    return largest


def _count_animals(areas: np.ndarray, in_range: Callable[[np.ndarray], np.ndarray], reference: float,
                   merged: float, smallest: float = 0.0) -> int:
    """How many animals the blobs of one frame hold: one per animal-sized blob (at least
    ``smallest``: a tail or leg cut off by the threshold is not an animal), and two to four for
    a blob that holds several (touching animals are still animals)."""
    if not len(areas):
        return 0
    if reference <= 0 or merged <= 0:
        return int(in_range(areas).sum())
    several = (areas >= merged) & (areas <= 4.5 * reference)
    single = in_range(areas) & (areas < merged) & (areas >= smallest)
    return int(single.sum() + np.clip(np.floor(areas[several] / reference), 2, 4).sum())


def _animal_areas(areas_per_frame: list[np.ndarray], n_individuals: int) -> np.ndarray:
    """Areas of the blobs that are animals, not noise, in sampled frames.

    With a known number N of animals, the N largest blobs of each frame. Otherwise the
    larger of two classes of blob sizes (Otsu's threshold on log area): noise specks and
    texture are many and small, animals few and large.
    """
    if n_individuals > 0:
        return np.concatenate([np.sort(a)[-n_individuals:] for a in areas_per_frame if len(a)]
                              or [np.empty(0)])
    pooled = np.concatenate(areas_per_frame) if areas_per_frame else np.empty(0)
    if len(pooled) < 2 or np.ptp(np.log(pooled)) < np.log(3):
        return pooled
    from skimage.filters import threshold_otsu

    cut = np.exp(threshold_otsu(np.log(pooled)))
    return pooled[pooled > cut]


CALIBRATE_ON_THE_COMMAND_LINE = ("calibrate with --set cm_per_pixel=... (or the Corrections "
                                 "panel's calibration line in napari)")


def units_notice(settings: Settings, width_px: int, fps: float,
                 how_to_calibrate: str = CALIBRATE_ON_THE_COMMAND_LINE) -> str:
    """What every length and speed rests on while ``cm_per_pixel`` is 0 (TRex then assumes the
    frame is ``meta_real_width`` cm wide); empty once calibrated. ``how_to_calibrate``: the
    way where the notice is read (the command line's by default; the panel names its own)."""
    if settings.cm_per_pixel > 0:
        return ""
    cm = settings.meta_real_width / width_px
    speed_px = settings.track_max_speed / cm / max(fps, 1e-9)
    return (f"cm_per_pixel is 0: the frame is assumed {settings.meta_real_width:g} cm wide "
            f"(meta_real_width), {cm:.4g} cm per pixel, so track_max_speed "
            f"{settings.track_max_speed:g} cm/s is {speed_px:.1f} px per frame and exported cm "
            f"rest on the same guess; {how_to_calibrate}")


#: a tracking where at least this share of the tracklets last 1-2 frames and end as ambiguous
#: matches is cut up by a track_max_speed too high, and one where this share ends because the
#: animal moved at track_max_speed by one too low (see :func:`speed_advice`). At the settings
#: the benchmarks use, 0-22 % of the tracklets end ambiguous (the bundled sample 47 %, at 2.1x
#: the speed suggested: a warning there would mislead a newcomer), 0-18 % at the speed; cut up
#: by its speed, the flies clip 100 % (78x); too slow (the default 10 cm/s), zebrafish test_A
#: 60 % (0.35x; 73.4 -> 98.2 % agreement with idtracker.ai at the speed suggested) and test_B
#: 34 % (0.42x; 77.5 -> 94.1 %)
CUT_UP_SHARE = 0.6
CUT_UP_RATIO = 4.0  # ... and only when the speed is this many times the one suggested
TOO_FAST_SHARE = 0.3
TOO_FAST_RATIO = 1.5  # ... and the speed suggested this many times the one set
SPEED_SAMPLE_FRAMES = 500  # frame pairs looked at to tell how far animals move and lie apart
MOVING_PX = 1.0  # a detection this near to one in the frame before is resting, not moving


def speed_advice(result: Any, settings: Settings, width_px: int, fps: float
                 ) -> tuple[str, float, str]:
    """``(warning, speed suggested in cm/s, what went wrong in a few words)`` when
    ``track_max_speed`` is far from how far the animals move in a frame (``("", 0, "")`` when
    it is not).

    The speed term of a match falls with the distance *relative to* the maximum speed: at 800 px
    per frame for animals 300 px apart (a speed in cm/s against a guessed ``cm_per_pixel``: the
    flies clip), every animal is almost as likely a match for every other, every match is
    ambiguous and every tracklet ends after a frame; at 14 px per frame for zebrafish that dart
    at 30 (the default 10 cm/s), 60 % of the tracklets end where a fish outran it. The speed
    suggested is twice the 95th percentile of how far a moving animal (a detection the tracker
    took) lies from the nearest one in the frame before (resting animals left out: flies rest
    most of the time): 9.1 px per frame on the flies (6.66 cm/s: 13 tracklets instead of
    3000), 39 on zebrafish test_A (28.3 cm/s: 242 tracklets instead of 638, 98.2 % agreement
    with idtracker.ai instead of 73.4 %). It is only suggested when it differs from the set
    speed by more than :data:`CUT_UP_RATIO` (too high) or :data:`TOO_FAST_RATIO` (too low), and
    not when the detection itself is in doubt (a warning about blob sizes or counts came first)."""
    t = result.tracklets
    if len(t) < 10:
        return "", 0.0, ""
    short = float(np.mean(t.length <= 2))
    ambiguous = float(np.mean((t.end_reason & AMBIGUOUS) != 0))
    too_fast = float(np.mean((t.end_reason & WEIRD_DISTANCE) != 0))
    cut_up = short >= CUT_UP_SHARE and ambiguous >= CUT_UP_SHARE
    if not cut_up and too_fast < TOO_FAST_SHARE:
        return "", 0.0, ""
    det = result.detections
    n_frames = len(result.assignment)
    steps, apart = [], []
    for f in np.unique(np.linspace(0, max(n_frames - 2, 0), SPEED_SAMPLE_FRAMES).astype(int)):
        # the detections taken for animals (not specks of noise the tracker left alone)
        a, b = result.assignment[int(f)], result.assignment[int(f) + 1]
        a, b = a[a >= 0], b[b >= 0]
        xa, ya, xb, yb = det["x"][a], det["y"][a], det["x"][b], det["y"][b]
        if len(xa) and len(xb):
            steps.append(np.hypot(xb[:, None] - xa[None], yb[:, None] - ya[None]).min(axis=1))
        if cut_up and len(xb) >= 2:  # how far apart they lie: only the "too high" warning says it
            d = np.hypot(xb[:, None] - xb[None], yb[:, None] - yb[None])
            np.fill_diagonal(d, np.inf)
            apart.append(d.min(axis=1))
    if not steps:
        return "", 0.0, ""
    steps = np.concatenate(steps)
    moving = steps[steps > MOVING_PX] if (steps > MOVING_PX).any() else steps
    step = float(np.percentile(moving, 95))
    cm = settings.pixel_size_cm(width_px)
    reach = settings.track_max_speed / cm / max(fps, 1e-9)
    suggested_px = max(2.0 * step, 1.0)
    suggested = suggested_px * cm * fps
    guessed = " (or calibrate cm_per_pixel first: it is guessed)" if settings.cm_per_pixel <= 0 else ""
    speed = f"track_max_speed = {settings.track_max_speed:g} cm/s is {reach:.0f} px per frame"
    moves = f"moving animals go up to ~{step:.0f} px per frame (95th percentile)"
    if cut_up and reach > CUT_UP_RATIO * suggested_px:
        gap = f" and lie ~{float(np.median(np.concatenate(apart))):.0f} px apart" if apart else ""
        return (f"{short:.0%} of the tracklets last 1-2 frames and {ambiguous:.0%} end as ambiguous "
                f"matches: {speed}, while {moves}{gap}, so each is almost as likely a match for "
                f"every other. Set track_max_speed to about {suggested:.3g} cm/s{guessed}",
                suggested, f"{reach:.0f} px per frame: it cut {short:.0%} of the tracklets to "
                f"1-2 frames, while moving animals go up to ~{step:.0f} px per frame")
    if too_fast >= TOO_FAST_SHARE and suggested_px > TOO_FAST_RATIO * reach:
        return (f"{too_fast:.0%} of the tracklets end where the animal moved at track_max_speed: "
                f"{speed}, while {moves}. Set track_max_speed to about {suggested:.3g} cm/s{guessed}",
                suggested, f"{reach:.0f} px per frame: it ended {too_fast:.0%} of the tracklets, "
                f"while moving animals go up to ~{step:.0f} px per frame")
    return "", 0.0, ""


def frame_times(video: Video, settings: Settings) -> tuple[float, np.ndarray]:
    """Frame rate and the time of every frame (real timestamps for variable frame rates)."""
    if settings.frame_rate > 0:
        return settings.frame_rate, np.arange(len(video)) / settings.frame_rate
    if isinstance(video, PyAVVideo):
        times = video.frame_times()
        if len(times) == len(video):
            return video.fps, times
    return video.fps, np.arange(len(video)) / video.fps


def track_video(
    video: str | os.PathLike | Video,
    settings: Settings | None = None,
    *,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    scheduler: str | None = "threads",
    chunk_frames: int = 250,
) -> TrackingRun:
    """Run background estimation, detection and tracking on one video (nothing is written)."""
    settings = settings or Settings()
    if not isinstance(video, Video):
        video = open_video(video)
    timings: dict[str, float] = {}
    streamed = scheduler in (None, "threads", "processes")
    with ExitStack() as stack:
        # the detection workers start (processes: spawn and import) while the background is
        # sampled, so that start-up is not paid again before the first chunk
        pool = stack.enter_context(detection_workers(
            scheduler == "processes", min(len(chunk_ranges(video, chunk_frames)),
                                          os.cpu_count() or 1))) if streamed else None
        return _track_video(video, settings, progress, should_stop, scheduler, chunk_frames,
                            pool, timings)


def _track_video(video: Video, settings: Settings, progress: Progress | None,
                 should_stop: Callable[[], bool] | None, scheduler: str | None, chunk_frames: int,
                 pool: Any, timings: dict[str, float]) -> TrackingRun:
    t0 = time.perf_counter()
    _, samples = sample_frames(video, settings.average_samples,
                               _stage(progress, "sampling frames"), should_stop)
    background = background_for(samples, settings)
    timings["background"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    settings, auto = estimate_parameters(samples, background, settings)
    del samples
    timings["parameters"] = time.perf_counter() - t0
    fps, times = frame_times(video, settings)
    auto.units = units_notice(settings, video.frame_shape[1], fps)
    params = DetectionParams.from_settings(settings, video.frame_shape)
    if auto.reference_area_px > 0:  # keep the pixels of blobs that may hold several animals
        params = dataclasses.replace(params, keep_pixels_above_px=min(
            params.keep_pixels_above_px, 1.15 * auto.reference_area_px))

    def tracking_params(settings: Settings) -> TrackingParams:
        return TrackingParams.from_settings(
            settings, fps, video.frame_shape[1], settings.track_max_individuals,
            params.size_ranges_px, auto.reference_area_px, auto.merged_area_px,
            auto.smallest_area_px)
    t0 = time.perf_counter()
    if pool is not None:
        # tracking follows detection chunk by chunk (both run at once, see streamed_detection)
        with streamed_detection(video, background, params, chunk_frames=chunk_frames,
                                progress=_stage(progress, "detecting animals"),
                                should_stop=should_stop, pool=pool) as stream:
            result = link_tracklets(stream, tracking_params(settings), times,
                                    _stage(progress, "tracking"), should_stop)
            detections = stream.joined()
        timings["detection+tracking"] = time.perf_counter() - t0
    else:
        detections = detect_video(video, background, params, chunk_frames=chunk_frames,
                                  scheduler=scheduler, progress=_stage(progress, "detecting animals"),
                                  should_stop=should_stop)
        timings["detection"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = link_tracklets(detections, tracking_params(settings), times,
                                _stage(progress, "tracking"), should_stop)
        timings["tracking"] = time.perf_counter() - t0
    # (when the detection itself is in doubt, how far its blobs move says nothing of the animals)
    warning, suggested, why = ("", 0.0, "") if auto.warnings else \
        speed_advice(result, settings, video.frame_shape[1], fps)
    if warning and settings.guessed_default("track_max_speed"):
        # the default speed in cm/s on a guessed scale: link the same detections again at the
        # speed measured (linking is seconds; the detection is not repeated)
        default = settings.track_max_speed
        settings = settings.updated(track_max_speed=float(f"{suggested:.3g}"))
        auto.track_max_speed = settings.track_max_speed
        auto.replaced_defaults["track_max_speed"] = (
            f"the default {default:g} cm/s on the guessed scale is {why}; set track_max_speed "
            "or calibrate cm_per_pixel to choose")
        auto.units = units_notice(settings, video.frame_shape[1], fps)
        t0 = time.perf_counter()
        result = link_tracklets(detections, tracking_params(settings), times,
                                _stage(progress, "tracking again at the speed measured"), should_stop)
        timings["tracking again"] = time.perf_counter() - t0
        warning = speed_advice(result, settings, video.frame_shape[1], fps)[0]
    if detections.undecodable:
        last = len(video) - detections.undecodable - 1
        auto.warnings.append(f"the recording ends early: frames after {last} could not be decoded "
                             f"(truncated file); the last {detections.undecodable} frame(s) hold "
                             "no animals")
    if warning:
        auto.warnings.append(warning)
    det = result.detections
    segments = global_segments(result.assignment, result.tracklets, det["x"], det["y"], det["split"],
                               video.frame_shape[:2])
    return TrackingRun(video.info, settings, fps, times, background, detections, result, segments,
                       auto, timings)


__all__ = ["AutoParameters", "TrackingRun", "estimate_parameters", "frame_times", "speed_advice",
           "track_video"]
