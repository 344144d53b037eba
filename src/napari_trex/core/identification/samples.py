"""Image samples for visual identification: one normalised crop per animal and frame.

TRex's training image (trex-reference §4.1): the 8-bit difference to the background inside
the animal's blob, 0 elsewhere, ``recognition_image_size`` after ``recognition_image_scale``,
turned so that the animal always points the same way. The difference is first evened out for
the light (:func:`light_gain`): each pixel's difference divided by its background brightness
and scaled to the video's median one, so an animal looks the same under the lamp and in a dim
corner. ``moments`` turns the crop along the
body's axis, the head/tail ambiguity resolved by the direction of motion over the tracklet
(the heading of ``results.heading_angles``); ``posture`` (the default, as in TRex) also
straightens the animal along its midline (:func:`straightened`), so a fish bent into a C
shows its markings where it shows them swimming straight; ``legacy`` is read as moments,
``none`` keeps the crop unrotated. The animal points to the right (+x) in every crop.

Crops are cut in one streaming pass over the frames that need them and never held beyond
the memory budget (``gpu_max_sample_gb``, counted like TRex as float32 images).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..detection import absolute_difference, ellipse_radius, region_properties
from ..errors import Cancelled
from ..video import Video

EIGHT = np.ones((3, 3), bool)


@dataclass(frozen=True)
class SampleParams:
    size: tuple[int, int] = (80, 80)  # width, height
    scale: float = 1.0
    normalization: str = "moments"
    threshold: int = 15
    #: the difference evened out for the light (:func:`light_gain`); False for networks trained
    #: before it was (their weights files do not say)
    even_light: bool = True

    @property
    def rotate(self) -> bool:
        return self.normalization != "none"


AUTO_SIDE_PER_BODY = 1.3  # automatic crop: its length in body lengths (the animal turned along x)
AUTO_MAX_AREA = 48 * 48  # ... at most this many px (bigger animals are scaled down): speed
AUTO_MIN_SIDE = 24  # ... each side at least (three 2x2 poolings leave 3x3)


def automatic_params(size: tuple[int, int], scale: float, body_length_px: float, normalization: str,
                     threshold: int, body_width_px: float | None = None, even_light: bool = True
                     ) -> tuple[SampleParams, str]:
    """The crop for ``recognition_image_size`` (``(0, 0)``: automatic) and what was decided.

    The network's cost grows with the crop's area (an 80x80 crop costs 5x a 40x40 one on a
    CPU), and an animal of 28 px in TRex's default 80x80 crop is mostly background. The
    automatic crop is ~1.3 body lengths long (body length: the 90th percentile of the tracked
    blobs' major axes) and, since every crop is turned so the animal lies along x, only as high
    as the animal needs: 1.5 x its width (``body_width_px``, the 95th percentile of the minor
    axes: bent postures included), at least 0.4 body lengths for bends, at most square (a
    square without turning, ``normalization = none``). The pixels a square spends on
    background go into resolution instead: a zebrafish 72 px long is cut 88x28 at scale 0.93
    instead of 48x48 at 0.52, which learns faster and better for the same cost. The area is
    at most 48 x 48 px (idtracker.ai's usual size), each side at least 24 px and a multiple
    of 4; a larger animal is scaled down to fit, a smaller one never up.
    """
    if tuple(size) != (0, 0):
        return SampleParams(tuple(int(v) for v in size), scale, normalization, threshold, even_light), \
            f"images {size[0]}x{size[1]} px at scale {scale:g} (recognition_image_size)"
    length = AUTO_SIDE_PER_BODY * max(body_length_px, 1.0)
    height = length
    if normalization != "none" and body_width_px:
        height = min(length, max(1.5 * body_width_px, 0.4 * body_length_px))
    scale = float(min(scale, np.sqrt(AUTO_MAX_AREA / (length * height))))

    def side(v: float) -> int:
        return int(max(AUTO_MIN_SIDE, 4 * round(v * scale / 4)))
    width, tall = side(length), side(height)
    return SampleParams((width, tall), scale, normalization, threshold, even_light), \
        f"images {width}x{tall} px at scale {scale:.3g} (automatic: body ~{body_length_px:.0f} x " \
        f"{body_width_px or body_length_px:.0f} px)"


def crop_sample(diff: np.ndarray, x: float, y: float, heading: float, params: SampleParams,
                by_shape: bool = False, bodies: np.ndarray | None = None,
                gain: np.ndarray | None = None) -> np.ndarray:
    """The normalised crop of the animal centred at (x, y) whose head points at ``heading``.

    Only the connected foreground around the centre is kept (other animals nearby are
    blanked), then one affine resampling shifts, rotates and scales it into the crop.

    ``bodies``: for a part of a blob split at a contact, rows (x, y, angle, major, minor) of
    this part first and of the other parts of its blob after. The connected foreground is
    then the whole clump, so of it only the pixels nearer to this part's body than to any
    other's are kept (:func:`nearest_body`): the crop shows the animal, not its neighbours.

    ``gain``: the frame's :func:`light_gain`, applied to the window around the animal only
    (a whole 1080p frame multiplied for a handful of animals would cost more than the crops).
    """
    width, height = params.size
    reach = int(np.ceil(np.hypot(width, height) / 2 / params.scale)) + 2
    top, left = int(round(y)) - reach, int(round(x)) - reach
    window = np.zeros((2 * reach + 1, 2 * reach + 1), np.float32)
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(diff.shape[0], top + 2 * reach + 1), min(diff.shape[1], left + 2 * reach + 1)
    if y1 <= y0 or x1 <= x0:
        return np.zeros((height, width), np.uint8)
    window[y0 - top: y1 - top, x0 - left: x1 - left] = diff[y0:y1, x0:x1]
    if gain is not None:
        window[y0 - top: y1 - top, x0 - left: x1 - left] *= gain[y0:y1, x0:x1]
        np.clip(np.rint(window, out=window), 0, 255, out=window)
    mask = window >= params.threshold
    labels, n = ndimage.label(mask, structure=EIGHT)
    if n:
        cy, cx = y - top, x - left
        centre = labels[int(round(cy)), int(round(cx))]
        if centre == 0:  # centroid outside the body (a bent animal): the nearest blob
            dist = ndimage.distance_transform_edt(labels == 0, return_indices=True)[1]
            centre = labels[dist[0][int(round(cy)), int(round(cx))], dist[1][int(round(cy)), int(round(cx))]]
        window = np.where(labels == centre, window, 0)
        if bodies is not None and len(bodies) > 1:
            ys, xs = np.nonzero(window)
            others = nearest_body(xs + left, ys + top, bodies) != 0
            window[ys[others], xs[others]] = 0
            if (~others).sum() >= 3:  # centred and turned by what is left of the animal
                own = np.zeros(window.shape, np.int32)
                own[ys[~others], xs[~others]] = 1
                props = region_properties(own, 1, window, top, left)
                x, y, axis = float(props["x"][0]), float(props["y"][0]), float(props["angle"][0])
                heading = axis if np.cos(axis - heading) >= 0 else axis + np.pi
    else:
        window[:] = 0
    out = straightened(window, x - left, y - top, heading, params) \
        if params.normalization == "posture" else None
    if out is None:
        # output (row, col) -> input (row, col): the output's +x axis runs along the heading
        theta = heading if params.rotate else 0.0
        c, s = np.cos(theta), np.sin(theta)
        matrix = np.array([[c, s], [-s, c]]) / params.scale
        centre_in = np.array([y - top, x - left])
        centre_out = np.array([(height - 1) / 2, (width - 1) / 2])
        offset = centre_in - matrix @ centre_out
        out = ndimage.affine_transform(window, matrix, offset=offset, output_shape=(height, width),
                                       order=1, mode="constant", cval=0.0)
    if by_shape and params.rotate and _skew_along_x(out) > 0:
        out = out[::-1, ::-1]  # heavier end to the left: turn it round, as every crop of it
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


POSTURE_DEGREE = 2  # the midline: a polynomial of this degree across the body axis
POSTURE_MIN_PIXELS = 12  # fewer body pixels: the crop is only turned, not straightened


def straightened(window: np.ndarray, cx: float, cy: float, heading: float, params: SampleParams
                 ) -> np.ndarray | None:
    """The animal in ``window`` (its pixels only, centroid at (cx, cy)) straightened along its
    midline: output columns follow the midline by arc length from the centroid's place on it
    (head to the right, +x), rows run along the midline's normal. The midline is a polynomial
    across the body axis fitted to the pixels weighted by their intensity, extended straight
    beyond the body's ends. None where too few pixels show the animal."""
    ys, xs = np.nonzero(window)
    if len(xs) < POSTURE_MIN_PIXELS:
        return None
    weight = window[ys, xs].astype(float)
    c, s = np.cos(heading), np.sin(heading)
    dx, dy = xs - cx, ys - cy
    u, v = dx * c + dy * s, -dx * s + dy * c
    lo, hi = float(u.min()), float(u.max())
    if hi - lo < 2:
        return None
    coef = np.polynomial.polynomial.polyfit(u, v, POSTURE_DEGREE, w=np.sqrt(weight))
    width, height = params.size
    reach = np.hypot(width, height) / params.scale
    uu = np.linspace(min(lo, -reach), max(hi, reach), 2 * int(np.ceil(2 * reach + hi - lo)) + 2)
    inside = np.clip(uu, lo, hi)
    slope = np.polynomial.polynomial.polyval(inside, np.polynomial.polynomial.polyder(coef))
    vv = np.polynomial.polynomial.polyval(inside, coef) + slope * (uu - inside)
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(uu), np.diff(vv)))])
    arc -= np.interp(0.0, uu, arc)  # arc length from the centroid's place on the midline
    along = (np.arange(width) - (width - 1) / 2) / params.scale
    across = (np.arange(height) - (height - 1) / 2) / params.scale
    pu, pv = np.interp(along, arc, uu), np.interp(along, arc, vv)
    tslope = np.interp(along, arc, slope)
    norm = np.hypot(1.0, tslope)
    nu, nv = -tslope / norm, 1.0 / norm  # the normal, pointing to +v (down) on a straight body
    su = pu[None, :] + across[:, None] * nu[None, :]
    sv = pv[None, :] + across[:, None] * nv[None, :]
    sx, sy = cx + su * c - sv * s, cy + su * s + sv * c
    return ndimage.map_coordinates(window, [sy, sx], order=1, mode="constant", cval=0.0)


def nearest_body(x: np.ndarray, y: np.ndarray, bodies: np.ndarray) -> np.ndarray:
    """Index of the body (rows x, y, angle, major, minor) each pixel (x, y) lies nearest to,
    measured in body shapes: along each body's major axis in halves of its length, across in
    halves of its width. Two animals lying side by side or head to flank divide their clump
    along their outlines, not along the straight line half-way between their centres."""
    columns = (np.asarray(bodies, float)[:, k, None] for k in range(5))
    return np.argmin(ellipse_radius(x[None], y[None], *columns), axis=0)


def _skew_along_x(crop: np.ndarray) -> float:
    """Third moment of the crop's mass along x: negative when the heavier end of the body is
    on the right (the thin end trails to the left). Where motion cannot tell head from tail (a
    resting animal), this orients every crop of the animal the same way (its heavier end to
    the right), instead of at random."""
    total = float(crop.sum())
    if total <= 0:
        return 0.0
    xs = np.arange(crop.shape[1], dtype=float)
    mass = crop.sum(axis=0)
    mean = float((mass * xs).sum() / total)
    return float((mass * (xs - mean) ** 3).sum())


@dataclass
class Samples:
    """Crops with what they show: frame, tracking slot, tracklet, label (identity or -1)."""

    images: np.ndarray  # (M, H, W) uint8
    frame: np.ndarray
    slot: np.ndarray
    tracklet: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.frame)

    def subset(self, index: np.ndarray) -> Samples:
        return Samples(self.images[index], self.frame[index], self.slot[index], self.tracklet[index],
                       self.label[index])

    @classmethod
    def empty(cls, size: tuple[int, int]) -> Samples:
        z = np.empty(0, np.int64)
        return cls(np.empty((0, size[1], size[0]), np.uint8), z, z, z, z)

    @classmethod
    def concatenate(cls, parts: list[Samples]) -> Samples:
        parts = [p for p in parts if len(p)]
        if not parts:
            raise ValueError("nothing to concatenate")
        return cls(*(np.concatenate([getattr(p, f) for p in parts])
                     for f in ("images", "frame", "slot", "tracklet", "label")))


def cut_samples(video: Video, background: np.ndarray, requests: Iterable[tuple],
                params: SampleParams, should_stop: Callable[[], bool] | None = None,
                progress: Callable[..., None] | None = None,
                message: str = "cutting image samples") -> Samples:
    """Cut crops for ``(frame, slot, tracklet, x, y, heading, label[, by_shape[, bodies]])``
    requests in one pass (``by_shape``: head and tail from the crop's shape, for resting
    animals; ``bodies``: the parts of a split clump, see :func:`crop_sample`).

    Frames are visited in increasing order; runs of nearby frames are decoded sequentially,
    isolated ones are read directly, so the cost follows the frames actually needed.
    """
    reqs = sorted(requests, key=lambda r: r[0])
    width, height = params.size
    images = np.empty((len(reqs), height, width), np.uint8)
    bg = np.clip(np.rint(background), 0, 255).astype(np.uint8)
    gain = light_gain(bg) if params.even_light else None
    by_frame: dict[int, list[int]] = {}
    for k, r in enumerate(reqs):
        by_frame.setdefault(int(r[0]), []).append(k)
    frames = sorted(by_frame)
    done = 0
    for start, stop in _runs(frames, gap=_decode_gap(video)):
        wanted = set(frames[start:stop])
        for index, frame in video.frames(frames[start], frames[stop - 1] + 1):
            if index not in wanted:
                continue
            if should_stop is not None and should_stop():
                raise Cancelled("cancelled while cutting image samples")
            diff = absolute_difference(frame, bg)
            for k in by_frame[index]:
                x, y, heading = reqs[k][3:6]
                by_shape = len(reqs[k]) > 7 and bool(reqs[k][7])
                bodies = reqs[k][8] if len(reqs[k]) > 8 else None
                images[k] = crop_sample(diff, x, y, heading, params, by_shape, bodies, gain)
            done += 1
            if progress is not None and (done % 25 == 0 or done == len(frames)):
                progress(done, len(frames), message)
    cols = np.array([(r[0], r[1], r[2], r[6]) for r in reqs], dtype=np.int64).reshape(-1, 4)
    return Samples(images, cols[:, 0], cols[:, 1], cols[:, 2], cols[:, 3])


LIGHT_GAIN_LIMITS = (0.5, 2.0)  # a background pixel darker / brighter than this is not light


def light_gain(background: np.ndarray) -> np.ndarray:
    """Per pixel, the factor that evens an animal's difference to the background out for the
    light falling on it: the video's median background brightness / this pixel's (Weber
    contrast, scaled back to 8 bits). Under a lamp twice as bright an animal's difference to
    the background is twice as large, though the animal is the same; the network would have
    to learn each animal at every brightness, when how dark an animal is tells animals apart
    (brightness augmentation and per-crop brightness normalisation both cost uniqueness). The
    zebrafish arenas' backgrounds run from 170 to 206 (+-10 %): evened out, the hold-out named
    right rose from 93.9 / 91.3 % to 95.0 / 94.7 % (test_A / test_B). Bounded to
    :data:`LIGHT_GAIN_LIMITS`, so a black or blown-out corner does not multiply its noise."""
    bg = np.asarray(background, np.float32)
    return np.clip(float(np.median(bg)) / np.maximum(bg, 1.0), *LIGHT_GAIN_LIMITS).astype(np.float32)


SEEK_GAP_DEFAULT = 64  # frames decoded forward rather than seeking, when keyframes are unknown


def _decode_gap(video: Video) -> int:
    """How far apart two wanted frames may be and still be reached by decoding forward: a seek
    decodes from the keyframe before the frame (on average half a keyframe interval), so
    decoding up to one keyframe interval forward costs no more than seeking (with frames
    every 9th, seeking each one took 100 s for 3000 frames; decoding through took 10 s)."""
    try:
        interval = video.info.keyframe_interval
    except (NotImplementedError, AttributeError):
        interval = None
    return int(max(8, interval)) if interval else SEEK_GAP_DEFAULT


def _runs(frames: list[int], gap: int) -> list[tuple[int, int]]:
    """Index ranges of ``frames`` whose neighbours are at most ``gap`` apart."""
    runs, start = [], 0
    for k in range(1, len(frames) + 1):
        if k == len(frames) or frames[k] - frames[k - 1] > gap:
            runs.append((start, k))
            start = k
    return runs


def images_within(max_gb: float, size: tuple[int, int]) -> int:
    """How many crops of ``size`` fit in ``gpu_max_sample_gb``, counted like TRex as float32
    images (the one budget every stage shares)."""
    return max(0, int(max_gb * 1e9 / (size[0] * size[1] * 4)))


def class_cap(counts: np.ndarray, size: tuple[int, int], max_gb: float) -> int:
    """TRex's per-class cap: ceil(lo + 0.65·(hi − lo)), limited so that all classes together
    stay within ``gpu_max_sample_gb`` counted as float32 images."""
    if not len(counts):
        return 0
    lo, hi = int(counts.min()), int(counts.max())
    cap = int(np.ceil(lo + 0.65 * (hi - lo)))
    budget = images_within(max_gb, size) // len(counts)
    return max(1, min(cap, budget))


def regular_subsample(index: np.ndarray, cap: int) -> np.ndarray:
    """At most ``cap`` of ``index`` at regular intervals (keeps the spread over time)."""
    if len(index) <= cap:
        return index
    return index[np.linspace(0, len(index) - 1, cap).round().astype(int)]


#: One block of consecutive frames in this many is held out for validation. 8, not 4: the
#: hold-out only has to tell when a unit has learnt (its stopping rules), and the images it
#: takes are lost to training for good (the final step keeps them out too). With an eighth held
#: out, zebrafish test_A / test_B reach a uniqueness of 0.934 / 0.887 instead of 0.914 / 0.847
#: (frames not trained on; training seed 0, 2 cores), crowded 10 x 3000 seeds 1 / 2 96.49 /
#: 97.99 % right instead of 95.90 / 96.17 %, realistic 8 x 3000 seeds 1 / 2 99.938 / 99.942 %
#: instead of 99.925 / 99.929 %.
HOLDOUT_EVERY = 8


def holdout_split(frames: np.ndarray, tracklets: np.ndarray, fps: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(train, validation)`` masks over images: per tracklet, its frames in blocks of
    consecutive frames (about an eighth of its span, at most a second), every
    :data:`HOLDOUT_EVERY`-th block held out, and training images closer than a quarter of a block
    to a held-out one left out of both. Consecutive frames of one animal look almost alike: a
    validation image between two training neighbours only measures memory, and the "every
    validation image right" stopping rule would fire on it."""
    train = np.zeros(len(frames), bool)
    val = np.zeros(len(frames), bool)
    for t in np.unique(tracklets):
        mine = np.flatnonzero(tracklets == t)
        f = frames[mine]
        span = int(f.max() - f.min()) + 1
        block = int(np.clip(span // 8, 1, max(1, round(fps))))
        held = ((f - f.min()) // block) % HOLDOUT_EVERY == HOLDOUT_EVERY // 2
        if not held.any() or held.all():
            train[mine] = True  # too short to hold anything out: all for training
            continue
        gap = max(1, block // 4)
        held_frames = np.sort(f[held])
        k = np.searchsorted(held_frames, f)
        nearest = np.minimum(np.abs(f - held_frames[np.clip(k, 0, len(held_frames) - 1)]),
                             np.abs(f - held_frames[np.clip(k - 1, 0, len(held_frames) - 1)]))
        val[mine[held]] = True
        train[mine[~held & (nearest > gap)]] = True
    return train, val


def check_holdout(train: Samples, val: Samples, min_gap: int) -> None:
    """Refuse a split where a validation image has a training image of the same tracklet
    within ``min_gap`` frames (what leaks memorised neighbours into validation)."""
    from ..errors import NapariTrexError

    for t in np.intersect1d(np.unique(train.tracklet), np.unique(val.tracklet)):
        a = np.sort(train.frame[train.tracklet == t])
        b = val.frame[val.tracklet == t]
        k = np.clip(np.searchsorted(a, b), 0, len(a) - 1)
        nearest = np.minimum(np.abs(a[k] - b), np.abs(a[np.maximum(k - 1, 0)] - b))
        if (nearest < min_gap).any():
            raise NapariTrexError(f"validation images of tracklet {int(t)} lie within {min_gap} "
                                  "frames of training images: the validation would measure memory")
