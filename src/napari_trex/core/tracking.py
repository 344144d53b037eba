"""Tracking: link blobs frame to frame into N tracking slots and cut the result into tracklets.

This follows TRex v1.1.9 (trex-reference §1.2, §2):

* each slot predicts where its animal will be (recent velocity, capped at
  ``track_max_speed``, decaying with ``track_speed_decay`` while the animal is lost);
* the probability of an edge slot → blob is P = S·A'·T' (speed, angle and time terms);
  edges below ``matching_probability_threshold`` are never used;
* only blobs of at least the smallest ``blob_size_ranges`` size take part (smaller ones are
  noise, specks, or a leg that broke off at the threshold);
* slots and blobs that compete are grouped into clusters (connected components of the edge
  graph) and each cluster is solved by ``scipy.optimize.linear_sum_assignment``; the whole
  probability matrix is computed at once with numpy (no Python loop over pairs);
* slots lost for at least ``track_max_reassign_time`` are re-attached greedily to leftover
  blobs, nearest first; each re-attachment starts a new tracklet;
* a tracklet ends on every TRex reason (frames skipped, timestamp gap, improbable match,
  manual match, speeding, no blob, maximum length) and the reason is kept.

Where napari-trex differs, and why:

* **A merge is decided by evidence, never by a size change alone.** A blob holds several
  animals when the predictions of two or more slots fall into it and it is larger than the
  smaller of them (:data:`ONE_ANIMAL_GROWTH`) while no animal-sized blob is left that nobody
  expects (then one of the slots followed the wrong animal), or when it is larger than any
  single animal of this population and another slot could be inside, or when it is larger
  than any single animal of this population (``merged_area``, from the single animals of the
  sampled frames, see :func:`~napari_trex.core.pipeline.estimate_parameters`; the top of
  ``blob_size_ranges`` only where that is unknown). Such a blob is split (raising the
  threshold, then, from the predicted positions, each pixel to the nearest animal: see
  :func:`~napari_trex.core.detection.split_blob_fill`); if that fails nobody gets it and the
  tracklets of the animals inside end (``MergedWithAnother``). A fly spreading its wings, a
  leg touching the threshold, a fish bending: none of these ends a tracklet.
* **Tracklets go on through a clean split.** A part of a split blob continues a tracklet only
  when it matched unambiguously (see below) and looks like the whole animal the slot had: its
  area within :data:`PART_AREA_TOLERANCE` of the animal's recent median area (from frames where
  it was alone), its centre within :data:`PART_OFFSET_TOLERANCE` body sizes of where the slot
  predicted it (a part cut across two animals jumps). Otherwise the part starts a tracklet of
  its own (``MergedWithAnother``). After a doubtful part the slot's next clean part starts a
  new tracklet only where animals rest side by side (:data:`RETURN_OFFSET_TOLERANCE`,
  :data:`RETURN_STILL`, :data:`RETURN_APART`), and no part is
  trusted while an animal that was not found this frame was last seen near it
  (:data:`LOST_NEARBY`: it may lie hidden under the part). The animal is still tracked, one
  doubtful frame does not cut the rest of a long contact into one-frame tracklets, and no
  tracklet carries a possible swap out of the contact. While animals rest in a lasting contact,
  the blob is divided between where the slots predict them first (TRex raises the threshold
  in every frame, whose cut wavers between animals resting side by side).
* **Ambiguous matches end tracklets**: another blob was almost as likely for this slot
  (``≥ track_ambiguity_ratio`` of its probability), or another slot almost as likely for this
  blob: a near-crossing. TRex keeps going there and sometimes swaps identities inside a
  tracklet, which poisons identification.
* **Trust is kinematic.** ``track_trusted_probability`` is compared with S·A' (how well the
  blob fits the predicted movement), not with TRex's time term T', which is low for the first
  frames after every restart and made TRex cut those into one-frame tracklets
  (``ProbabilityTooSmall``). A slot with no velocity yet (the first frame after a gap) has no
  prediction to distrust; the ambiguity rule still guards it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .detection import COLUMNS, Detections, StreamedDetections, split_blob, split_blob_fill
from .errors import Cancelled
from .settings import Settings
from .tracklets import (
    LOST_FOR_ONE_FRAME,
    MANUAL_MATCH,
    MANUAL_SPLIT,
    MAX_SEGMENT_LENGTH,
    AMBIGUOUS,
    MERGED,
    NO_BLOB,
    PROBABILITY_TOO_SMALL,
    TIMESTAMP_TOO_DIFFERENT,
    WEIRD_DISTANCE,
    Tracklets,
)

PART_ROWS = 1 << 40  # row numbers of split parts start here (above any video's detections)
HISTORY = 6  # positions kept per slot for the velocity (TRex: ~5 valid frames)
SMALL_PROBLEM = 32  # up to this many slots, one Hungarian over all of them (same optimum)
AREA_HISTORY = 10  # areas (px) of each slot's last whole-animal blobs
#: A part of a split blob is a whole animal when its area is within this factor of the animal's
#: recent median area (its own posture changes stay well inside; a part that holds half of a
#: neighbour, or only half of the animal, does not).
PART_AREA_TOLERANCE = 1.5
#: ... and when its centre lies within this share of the animal's size (square root of its
#: area) of the predicted position.
PART_OFFSET_TOLERANCE = 0.3
#: ... and when the animals in the blob overlap by at most this share of their summed areas
#: (touching side by side, not lying over each other).
MAX_OVERLAP = 0.2
#: After a contact, a whole blob much larger than the animal (ONE_ANIMAL_GROWTH) is still the
#: contact for the next frame, and for up to this long (s) while a slot that found nothing or
#: holds a doubtful part predicts its animal on that blob; after that it is the animal, grown.
#: (Within reach of it was not evidence enough: two animals that have parted each cut the other
#: into one-frame tracklets for this long.)
CONTACT_SETTLE = 0.2
#: Two predictions in one blob that is no larger than this factor of the smaller claimant's
#: recent area cannot be split into whole animals: they lie right over each other, or two slots
#: followed one animal. Splitting such a blob would cut one animal in two.
ONE_ANIMAL_GROWTH = 1.25
#: A slot whose last blob was a doubtful part may trust a part again (a new tracklet that goes on
#: through the contact) only on stronger evidence: its centre within this share of the animal's
#: size of the prediction (instead of PART_OFFSET_TOLERANCE) ...
RETURN_OFFSET_TOLERANCE = 0.2
#: ... and only while the animal stays put (moved, and is predicted to move, at most this share
#: of its size since the last frame): animals resting against each other, the long contacts.
#: Animals that cross move into each other, and the halves of a split X look like whole animals.
RETURN_STILL = 0.1
#: A contact goes on (the blob is divided between where the slots predict their animals, see
#: _split) while every animal in it moved, and is predicted to move, at most this share of its
#: size since the last frame ...
LASTING_STILL = 0.3
#: ... and at most this share over its last HISTORY frames: resting animals jitter (posture, and
#: the division of the blob shifts by a few pixels), animals crossing in contact move one way.
#: At RETURN_STILL's 0.1 the jitter alone ended a rest after a frame or two, and the threshold
#: then cut the blob anew every frame along a seam that wavered between the animals: the split
#: parts hopped from animal to animal and their identities with them (realistic 8 x 3000 seed 2:
#: all 27 wrong animal-frames). At 0.3 without the second rule, a slow crossing of the plain
#: generator was divided by the predictions and one tracklet carried both animals out of it.
LASTING_DRIFT = 0.8
#: ... and only while the other parts lie at least this many animal sizes away (side by side;
#: closer, the animals lie partly over each other and a part's centre is no animal's centre).
RETURN_APART = 0.9
#: ... and, for every part, no slot that found nothing this frame was last seen within this many
#: animal sizes of it: a lost animal may lie hidden under the part (one part, two animals).
LOST_NEARBY = 3.0
#: A slot whose recent whole blobs were at least this factor of the population's typical animal
#: may never have been seen alone (a pair that touched from the first frame): its prediction is
#: the pair's centre, no seed for one animal (see ``_split``).
PAIR_AREA = 1.6


@dataclass(frozen=True)
class TrackingParams:
    """Tracking settings resolved for one video (pixels and seconds)."""

    n_individuals: int
    fps: float
    max_speed_px: float  # px/s
    speed_decay: float = 0.7
    max_reassign_time: float = 0.5
    trusted_probability: float = 0.5
    time_probability: bool = True
    matching_threshold: float = 0.1
    huge_timestamp_ends: bool = True
    huge_timestamp_seconds: float = 0.2
    end_for_speed: bool = True
    segment_max_length: float = 0.0
    size_ranges_px: tuple[tuple[float, float], ...] = ((0.0, np.inf),)
    split: bool = True
    split_fill: bool = True  # where raising the threshold fails, split from the predictions
    split_threshold: int = 15
    split_global_shrink: float = 0.2
    reference_area: float = 0.0  # typical area of one animal (px); 0 = unknown
    merged_area: float = np.inf  # a blob this large holds several animals (px; from the samples)
    smallest_area: float = 0.0  # smaller blobs are more likely fragments than animals (px)
    ambiguity_ratio: float = 0.5  # end a tracklet if a rival edge has >= this share of its P
    manual_matches: dict[int, dict[int, int]] = field(default_factory=dict)
    manual_splits: dict[int, list[int]] = field(default_factory=dict)  # frame: blobs starting anew

    @classmethod
    def from_settings(cls, settings: Settings, fps: float, width: int, n_individuals: int,
                      size_ranges_px: tuple[tuple[float, float], ...], reference_area: float = 0.0,
                      merged_area: float = 0.0, smallest_area: float = 0.0) -> TrackingParams:
        return cls(
            n_individuals=n_individuals, fps=fps,
            max_speed_px=settings.track_max_speed / settings.pixel_size_cm(width),
            speed_decay=settings.track_speed_decay,
            max_reassign_time=settings.track_max_reassign_time,
            trusted_probability=settings.track_trusted_probability,
            time_probability=settings.track_time_probability_enabled,
            matching_threshold=settings.matching_probability_threshold,
            huge_timestamp_ends=settings.huge_timestamp_ends_segment,
            huge_timestamp_seconds=settings.huge_timestamp_seconds,
            end_for_speed=settings.track_end_segment_for_speed,
            segment_max_length=settings.track_segment_max_length,
            size_ranges_px=size_ranges_px,
            split=settings.blob_split_algorithm == "threshold",
            split_fill=settings.blob_split_algorithm in ("threshold", "fill"),
            split_threshold=max(settings.threshold, settings.track_threshold),
            split_global_shrink=settings.blob_split_global_shrink_limit,
            reference_area=reference_area,
            merged_area=merged_area if merged_area > 0 else np.inf,
            smallest_area=smallest_area,
            ambiguity_ratio=settings.track_ambiguity_ratio,
            manual_matches=dict(settings.manual_matches),
            manual_splits={int(f): list(b) for f, b in settings.manual_splits.items()},
        )


@dataclass
class TrackingResult:
    """Blobs after splitting, which blob each slot has per frame, and the tracklets."""

    detections: Detections
    assignment: np.ndarray  # (frames, N) row in ``detections`` or -1
    tracklets: Tracklets
    tracklet_of: np.ndarray  # (frames, N) tracklet id or -1
    probability: np.ndarray  # (frames, N) probability of the chosen edge (nan: none/new)


def prediction_weights(decay: float, max_gap: int) -> np.ndarray:
    """Cumulative weights W[g] = sum_{f=1..g} w(f), w(f) = (1+λ⁴)/(1+λ⁴·f) (TRex App. 10):
    how many frames' worth of velocity a slot lost for g frames is assumed to have moved."""
    lam4 = decay ** 4
    f = np.arange(1, max_gap + 1, dtype=float)
    w = (1 + lam4) / (1 + lam4 * f)
    return np.concatenate([[0.0], np.cumsum(w)])


def edge_probabilities(pred: np.ndarray, last: np.ndarray, blobs: np.ndarray, dt_frame: float,
                       time_term: np.ndarray, max_speed_px: float) -> np.ndarray:
    """P = S·A'·T' for every slot (rows) × blob (columns), TRex v1.1.9 ``Individual::probability``."""
    delta = blobs[None, :, :] - pred[:, None, :]
    r = np.hypot(delta[..., 0], delta[..., 1]) / max(dt_frame, 1e-9) / max_speed_px
    speed = 1.0 / (1.0 + r) ** 2
    a = pred - last  # predicted movement
    b = blobs[None, :, :] - last[:, None, :]  # movement to the blob
    na = np.hypot(a[:, 0], a[:, 1])[:, None]
    nb = np.hypot(b[..., 0], b[..., 1])
    cross = a[:, None, 0] * b[..., 1] - a[:, None, 1] * b[..., 0]
    dot = a[:, None, 0] * b[..., 0] + a[:, None, 1] * b[..., 1]
    theta = np.abs(np.arctan2(cross, dot))
    angle = np.where((na > 1) & (nb > 1), 0.9 + 0.1 * (1 - theta / np.pi) ** 2, 1.0)
    return speed * angle * time_term[:, None]


def _assign_clusters(prob: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Maximise the summed probability per cluster of competing slots/blobs (Hungarian)."""
    n_rows, n_cols = prob.shape
    edges = prob >= threshold
    if not edges.any():
        return []
    if n_rows <= SMALL_PROBLEM:  # one Hungarian is cheaper than finding the clusters
        rows = np.flatnonzero(edges.any(axis=1))
        cols = np.flatnonzero(edges.any(axis=0))
        sub = prob[np.ix_(rows, cols)]
        ri, ci = linear_sum_assignment(np.where(sub >= threshold, -sub, 1.0))
        return [(int(rows[i]), int(cols[j])) for i, j in zip(ri, ci) if sub[i, j] >= threshold]
    r, c = np.nonzero(edges)
    graph = coo_matrix((np.ones(len(r)), (r, n_rows + c)), shape=(n_rows + n_cols,) * 2)
    _, component = connected_components(graph, directed=False)
    pairs: list[tuple[int, int]] = []
    row_comp, col_comp = component[:n_rows], component[n_rows:]
    for comp in np.unique(component[r]):
        rows = np.flatnonzero((row_comp == comp) & edges.any(axis=1))
        cols = np.flatnonzero((col_comp == comp) & edges.any(axis=0))
        if len(rows) == 1 and len(cols) == 1:
            pairs.append((int(rows[0]), int(cols[0])))
            continue
        sub = prob[np.ix_(rows, cols)]
        cost = np.where(sub >= threshold, -sub, 1.0)  # impossible edges cost more than any real one
        ri, ci = linear_sum_assignment(cost)
        pairs += [(int(rows[i]), int(cols[j])) for i, j in zip(ri, ci) if sub[i, j] >= threshold]
    return pairs


class _Blobs:
    """The candidate blobs of one frame, growing when merged blobs are split."""

    def __init__(self, detections: Detections | StreamedDetections, frame: int) -> None:
        if isinstance(detections, StreamedDetections):
            det, first_row, rows = detections.frame(frame)
        else:
            det, first_row, rows = detections, 0, detections.rows(frame)
        self.row = np.arange(first_row + rows.start, first_row + rows.stop, dtype=np.int64)
        self.pos = np.column_stack([det["x"][rows], det["y"][rows]]).astype(float)
        self.area = det["area"][rows].astype(float)
        self.blob_id = det["blob_id"][rows]
        self.alive = np.ones(len(self.row), bool)
        self.apart = np.ones(len(self.row), bool)  # parts: the animals did not overlap much
        self.shared = np.zeros(len(self.row), bool)  # claimed by several slots, left whole

    def add(self, parts: dict[str, np.ndarray], first_row: int, apart: bool = True) -> np.ndarray:
        k = len(parts["x"])
        new = np.arange(first_row, first_row + k, dtype=np.int64)
        self.row = np.concatenate([self.row, new])
        self.pos = np.vstack([self.pos, np.column_stack([parts["x"], parts["y"]])])
        self.area = np.concatenate([self.area, parts["area"]])
        self.blob_id = np.concatenate([self.blob_id, parts["blob_id"]])
        self.alive = np.concatenate([self.alive, np.ones(k, bool)])
        self.apart = np.concatenate([self.apart, np.full(k, apart)])
        self.shared = np.concatenate([self.shared, np.zeros(k, bool)])
        return np.arange(len(self.row) - k, len(self.row))


def track(detections: Detections | StreamedDetections, params: TrackingParams,
          times: np.ndarray | None = None, progress: Callable[..., None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> TrackingResult:
    """Link the detections of every frame into ``params.n_individuals`` slots and tracklets.

    ``detections`` may be :class:`StreamedDetections`: tracking then follows the detection of
    later chunks of frames, which runs meanwhile in other threads.
    """
    n_frames = detections.n_frames
    n = params.n_individuals
    fps = params.fps
    if times is None:
        times = np.arange(n_frames) / fps
    t_max = params.max_reassign_time
    max_gap = int(np.ceil((t_max + 1) * fps)) + 2
    weights = prediction_weights(params.speed_decay, max_gap)
    min_area = min(lo for lo, _ in params.size_ranges_px)
    # the largest single animal: what this population's sizes say (from the samples), else the
    # top of blob_size_ranges. A blob between the two is an animal (a large one spreading its
    # wings), not a merge: size alone never decides a merge
    max_area = params.merged_area if np.isfinite(params.merged_area) else \
        max(hi for _, hi in params.size_ranges_px)

    last_pos = np.full((n, 2), np.nan)
    last_frame = np.full(n, -1, np.int64)
    hist_pos = np.full((n, HISTORY, 2), np.nan)
    hist_frame = np.full((n, HISTORY), -1, np.int64)
    recent = np.full((n, int(np.ceil(fps)) + 1), -np.inf)  # times of recently assigned frames
    area_hist = np.full((n, AREA_HISTORY), np.nan)  # areas of the slot's recent unsplit blobs
    doubtful = np.zeros(n, bool)  # the slot's last blob was a part that may hold the wrong animal
    last_contact = np.full(n, -(10 ** 9), np.int64)  # last frame with a part or a shared blob
    settle = max(2, int(round(CONTACT_SETTLE * fps)))  # frames a contact may take to dissolve
    current = np.full(n, -1, np.int64)  # open tracklet id per slot
    started = np.zeros(n, np.int64)
    tracklet_rows: list[list[int]] = []  # id, slot, start, end, reason
    assignment = np.full((n_frames, n), -1, np.int64)
    probability = np.full((n_frames, n), np.nan)
    extra: list[dict[str, np.ndarray]] = []  # parts of split blobs, appended after the originals
    n_extra = 0
    base = PART_ROWS  # rows of split parts: PART_ROWS + k, renumbered at the end

    def close(slot: int, end: int, reason: int) -> None:
        tracklet_rows[current[slot]][3] = end
        tracklet_rows[current[slot]][4] = reason
        current[slot] = -1

    for t in range(n_frames):
        if should_stop is not None and t % 50 == 0 and should_stop():
            raise Cancelled("tracking cancelled")
        now = times[t]
        dt_frame = now - times[t - 1] if t > 0 else 1.0 / fps
        blobs = _Blobs(detections, t)
        # each slot's own recent size (its unsplit blobs), else the population's
        own_area = _median_areas(area_hist)
        typical_area = np.where(np.isfinite(own_area), own_area, params.reference_area)
        blobs.alive &= blobs.area >= min_area  # specks and broken-off legs are never animals
        seen = last_frame >= 0
        lost_for = np.where(seen, now - times[np.maximum(last_frame, 0)], np.inf)
        active = seen & (lost_for <= t_max) if params.time_probability else seen.copy()
        slots = np.flatnonzero(active)
        pred, has_velocity = _predict(slots, hist_pos, hist_frame, last_pos, last_frame, t, weights,
                                      max_gap, params.max_speed_px / fps)
        predicted = np.full((n, 2), np.nan)
        predicted[slots] = pred
        time_term = _time_term(params, recent[slots], lost_for[slots], now, fps, t_max)
        kin = edge_probabilities(pred, last_pos[slots], blobs.pos, dt_frame, np.ones(len(slots)),
                                 params.max_speed_px)
        kin[:, ~blobs.alive] = 0.0
        prob = kin * time_term[:, None]
        # -- manual matches first --------------------------------------------------------------------
        forced: dict[int, int] = {}
        for identity, blob_id in params.manual_matches.get(t, {}).items():
            hit = np.flatnonzero(blobs.blob_id == blob_id)
            if 0 <= identity < n and len(hit):
                forced[int(identity)] = int(hit[0])
        # -- blobs that hold several animals: split them, or nobody gets them ------------------------
        # evidence: the predictions of two or more slots fall into the blob, or it is larger than
        # the largest single animal (never a size change of one animal alone)
        excluded = np.zeros(n, bool)  # slots inside an unsplittable merge this frame
        if prob.shape[1]:
            has_edge = prob.max(axis=1, initial=0.0) >= params.matching_threshold if len(slots) \
                else np.zeros(0, bool)
            best = np.where(has_edge, prob.argmax(axis=1) if len(slots) else 0, -1)
            # an animal-sized blob that no slot expects: an animal nobody follows. Then two
            # predictions in one animal-sized blob are more likely two slots on one animal
            # than two animals in one blob: the matching gives it to one of them, and the
            # other is free to take the lone animal (counting, as TRex's "fewer blobs than
            # animals", both ways)
            unexpected = blobs.alive & (blobs.area <= max_area) & (blobs.area >= params.smallest_area)
            unexpected[best[best >= 0]] = False
            held = last_frame[slots] == t - 1
            unmatched = np.flatnonzero((best < 0) & held)
            claimed = _claimed_blobs(detections, blobs, base, best, held, pred)
            for b in range(prob.shape[1]):
                if not blobs.alive[b]:
                    continue
                # claimants: slots that held their animal in the last frame and predict it in this
                # blob (the likeliest blob for them, or, with no likely blob at all, the blob their
                # prediction falls into: a merged blob's centre lies between the animals); a slot
                # lost for longer predicts where its animal was: weak evidence of anything inside
                inside = (claimed == b) & held
                if len(unmatched):
                    inside[unmatched] = _falls_into(detections, int(blobs.row[b]), base,
                                                    pred[unmatched])
                claimants = slots[inside]
                oversized = blobs.area[b] > max_area
                if len(claimants) < 2 and not oversized:
                    continue
                if len(claimants) == 1 and (prob[:, b] >= params.matching_threshold).sum() < 2 \
                        and blobs.area[b] < 2 * max_area:
                    continue  # larger than any animal seen, but no other one could be in it
                if len(claimants) >= 2 and not oversized and unexpected.any():
                    blobs.shared[b] = True  # whoever gets it may hold the wrong animal
                    continue
                if len(claimants) >= 2 and not oversized and \
                        blobs.area[b] <= ONE_ANIMAL_GROWTH * typical_area[claimants].min():
                    # no bigger than one of them: animals right over each other (no cut gives
                    # whole animals), or two slots that followed one animal; nobody gets it,
                    # and once the slots are lost for good they are re-attached apart
                    blobs.alive[b] = False
                    excluded[claimants] = True
                    continue
                if len(claimants) >= 2:
                    # room for more animals than claim it (one a lost slot had): a part each
                    k = len(claimants) + _unclaimed(blobs.area[b], typical_area[claimants],
                                                    params.reference_area)
                else:
                    k = max(2, int(round(blobs.area[b] / params.reference_area))) \
                        if params.reference_area > 0 else 2
                # a contact that goes on: every animal inside was in one in the last frame, none
                # may be a pair never seen apart (PAIR_AREA), the blob holds no animal nobody
                # claims (its area fits the claimants'), and they stay put (LASTING_STILL,
                # LASTING_DRIFT: animals crossing in contact move through each other, and parts
                # drawn from the predictions follow the predictions, not the animals); then the
                # predictions divide it (see _split)
                lasting = len(claimants) >= 2 and bool((last_contact[claimants] == t - 1).all()) \
                    and params.reference_area > 0 \
                    and bool((typical_area[claimants] < PAIR_AREA * params.reference_area).all()) \
                    and _holds_just(blobs.area[b], float(typical_area[claimants].sum())) \
                    and not any(_moving(pred[i], pred[i], last_pos[slots[i]], typical_area[slots[i]],
                                        LASTING_STILL)
                                or _wandered(hist_pos[slots[i]], last_pos[slots[i]],
                                             typical_area[slots[i]])
                                for i in np.flatnonzero(inside))
                parts = _split(detections, int(blobs.row[b]), base, k, params,
                               pred[inside] if len(claimants) >= 2 else None, lasting)
                blobs.alive[b] = False
                if parts is None:  # several animals in one blob, no way to tell them apart
                    excluded[claimants] = True
                    continue
                parts["frame"] = np.full(k, t, np.int32)
                extra.append(parts)
                typical = list(typical_area[claimants])
                typical += [params.reference_area] * (k - len(typical))
                # animals lying over each other: the blob is much smaller than their sum, and
                # no cut through it gives whole animals; much larger than their sum: another
                # animal nobody claimed is inside, and the parts straddle it
                apart = _holds_just(blobs.area[b], float(np.sum(typical))) and len(claimants) == k
                new_cols = blobs.add(parts, base + n_extra, apart)
                n_extra += k
                new_kin = edge_probabilities(pred, last_pos[slots], blobs.pos[new_cols], dt_frame,
                                             np.ones(len(slots)), params.max_speed_px)
                kin = np.hstack([kin, new_kin])
                prob = np.hstack([prob, new_kin * time_term[:, None]])
            kin[:, ~blobs.alive] = 0.0
            prob[:, ~blobs.alive] = 0.0
        # -- matching (Hungarian per cluster) --------------------------------------------------------
        taken_slots = np.zeros(n, bool)
        taken_blobs = np.zeros(len(blobs.row), bool)
        chosen = np.full(n, -1, np.int64)  # column in blobs
        chosen_p = np.full(n, np.nan)  # kinematic probability of the chosen edge
        for slot, col in forced.items():
            chosen[slot], taken_slots[slot], taken_blobs[col] = col, True, True
        if len(slots) and prob.shape[1]:
            usable = prob.copy()
            usable[taken_slots[slots] | excluded[slots], :] = 0.0
            usable[:, taken_blobs] = 0.0
            for i, j in _assign_clusters(usable, params.matching_threshold):
                slot = int(slots[i])
                chosen[slot], chosen_p[slot] = j, kin[i, j]
                taken_slots[slot], taken_blobs[j] = True, True
        ambiguous = _ambiguous(prob, slots, chosen, forced, params)
        # -- every animal left over gets a slot: never-seen slots first, then lost ones -------------
        # (never a blob that looks like several animals: a tracklet must not start inside a merge)
        is_part = blobs.row >= base  # parts of a split blob are one animal each already
        leftover = np.flatnonzero(blobs.alive & ~taken_blobs & (is_part | (blobs.area <= max_area)))
        if len(leftover):
            never = np.flatnonzero(~seen & ~taken_slots)
            # the most animal-like blobs first (size nearest the typical animal: not a leg that
            # broke off, not a speck of clutter), then top-left to bottom-right as TRex does
            likeness = np.abs(np.log(np.maximum(blobs.area[leftover], 1) / params.reference_area)) \
                if params.reference_area > 0 else np.zeros(len(leftover))
            order = leftover[np.lexsort((blobs.pos[leftover, 0], blobs.pos[leftover, 1],
                                         np.round(likeness, 1)))]
            for slot, col in zip(never, order):
                chosen[slot], taken_slots[slot], taken_blobs[col] = col, True, True
            leftover = leftover[~taken_blobs[leftover]]
            lost_slots = np.flatnonzero(seen & ~taken_slots & ~excluded)
            for slot, col in _reattach(blobs.pos[leftover], last_pos[lost_slots], lost_for[lost_slots]):
                slot, col = int(lost_slots[slot]), int(leftover[col])
                chosen[slot], taken_slots[slot], taken_blobs[col] = col, True, True
        # -- slots that found nothing or hold a doubtful part: where they predict their animal,
        # the contact may still go on
        unsure = [int(slot) for slot in slots if chosen[slot] < 0 or doubtful[slot]]
        # -- update slots and tracklets ---------------------------------------------------------------
        split_here = set(params.manual_splits.get(t, ()))
        lost_now = seen & (chosen < 0)  # animals not found this frame (however long ago last seen)
        for slot in range(n):
            col = int(chosen[slot])
            if col < 0:
                if current[slot] >= 0 and last_frame[slot] == t - 1:
                    reason = LOST_FOR_ONE_FRAME | (MERGED if excluded[slot] else NO_BLOB)
                    close(slot, t - 1, reason)
                continue
            pos = blobs.pos[col]
            # a part is trusted when it is the whole animal where the slot predicted it (after a
            # doubtful part: nearer still) and no animal missing this frame was last seen near it
            # (and coming out of a contact, a whole blob still too big for the animal, with an
            # animal lost nearby, is the contact itself, not yet the animal alone)
            typical = typical_area[slot] if (
                blobs.row[col] >= base or t - last_contact[slot] <= settle) else np.nan
            trusted = True
            if blobs.row[col] >= base:  # a part of a split blob
                tolerance = RETURN_OFFSET_TOLERANCE if doubtful[slot] else PART_OFFSET_TOLERANCE
                trusted = (last_frame[slot] == t - 1 and bool(blobs.apart[col])
                           and _whole_animal(blobs.area[col], own_area[slot], pos - predicted[slot],
                                             tolerance)
                           and not _lost_near(pos, last_pos[lost_now], typical))
                if trusted and doubtful[slot]:  # back from doubt: only animals resting side by side
                    trusted = not (_moving(pos, predicted[slot], last_pos[slot], typical)
                                   or _part_nearby(blobs, col, base, typical))
            doubtful_now = bool(blobs.shared[col]) or not trusted or (
                t - last_contact[slot] <= settle and blobs.area[col] > ONE_ANIMAL_GROWTH * typical
                and (t - last_contact[slot] <= 1 or _falls_into(
                    detections, int(blobs.row[col]), base,
                    predicted[[s for s in unsure if s != slot]]).any()))
            reason = 0
            if current[slot] >= 0:
                if last_frame[slot] != t - 1:
                    reason |= LOST_FOR_ONE_FRAME
                if params.huge_timestamp_ends and dt_frame >= params.huge_timestamp_seconds:
                    reason |= TIMESTAMP_TOO_DIFFERENT
                if slot in forced:
                    reason |= MANUAL_MATCH
                if int(blobs.blob_id[col]) in split_here:
                    reason |= MANUAL_SPLIT
                elif np.isnan(chosen_p[slot]) or (
                        has_velocity[slot] and chosen_p[slot] < params.trusted_probability):
                    reason |= PROBABILITY_TOO_SMALL
                if ambiguous[slot]:
                    reason |= AMBIGUOUS
                if doubtful[slot] or doubtful_now:
                    reason |= MERGED
                elapsed = now - times[last_frame[slot]]
                moved = float(np.hypot(*(pos - last_pos[slot])))
                if params.end_for_speed and elapsed > 0 and moved / elapsed >= 0.99 * params.max_speed_px:
                    reason |= WEIRD_DISTANCE
                if params.segment_max_length > 0 and (t - started[slot]) / fps >= params.segment_max_length:
                    reason |= MAX_SEGMENT_LENGTH
                if reason:
                    close(slot, int(last_frame[slot]), reason)
            if current[slot] < 0:
                current[slot] = len(tracklet_rows)
                started[slot] = t
                tracklet_rows.append([len(tracklet_rows), slot, t, t, 0])
            tracklet_rows[current[slot]][3] = t
            assignment[t, slot] = blobs.row[col]
            probability[t, slot] = chosen_p[slot]
            if last_frame[slot] != t - 1 or reason & (WEIRD_DISTANCE | PROBABILITY_TOO_SMALL):
                # velocity history restarts after a gap, and where the animal did not move as
                # predicted (else the jump spoils the next predictions: a run of short tracklets)
                hist_pos[slot] = np.nan
                hist_frame[slot] = -1
            hist_pos[slot, :-1] = hist_pos[slot, 1:]
            hist_frame[slot, :-1] = hist_frame[slot, 1:]
            hist_pos[slot, -1] = pos
            hist_frame[slot, -1] = t
            recent[slot, :-1] = recent[slot, 1:]
            recent[slot, -1] = now
            if blobs.row[col] < base and not doubtful_now:  # the animal's own size, alone
                area_hist[slot, :-1] = area_hist[slot, 1:]
                area_hist[slot, -1] = blobs.area[col]
            doubtful[slot] = doubtful_now
            if blobs.row[col] >= base or blobs.shared[col]:  # in a contact (not just doubtful)
                last_contact[slot] = t
            last_pos[slot] = pos
            last_frame[slot] = t
        if progress is not None and (t % 100 == 0 or t == n_frames - 1):
            progress(t + 1, n_frames, "tracking")

    if isinstance(detections, StreamedDetections):
        detections = detections.joined()
    final, remap = _with_split_parts(detections, extra)
    assignment = np.where(assignment >= 0, remap[np.maximum(assignment, 0)], -1)
    tracklets = Tracklets.from_rows([tuple(r) for r in tracklet_rows])
    tracklet_of = np.full((n_frames, n), -1, np.int64)
    for tid, slot, a, b in zip(tracklets.id, tracklets.individual, tracklets.start, tracklets.end):
        tracklet_of[a: b + 1, slot] = np.where(assignment[a: b + 1, slot] >= 0, tid, -1)
    return TrackingResult(final, assignment, tracklets, tracklet_of, probability)


def _predict(slots: np.ndarray, hist_pos: np.ndarray, hist_frame: np.ndarray, last_pos: np.ndarray,
             last_frame: np.ndarray, t: int, weights: np.ndarray, max_gap: int, cap: float
             ) -> tuple[np.ndarray, np.ndarray]:
    """Predicted positions of ``slots`` in frame ``t`` (vectorised) and, per slot of all N,
    whether it has a velocity yet (a slot without one is predicted to stay put)."""
    has_velocity = np.zeros(len(last_frame), bool)
    gap = np.clip(t - last_frame[slots], 1, max_gap)
    d_pos = np.diff(hist_pos[slots], axis=1)
    d_frame = np.diff(hist_frame[slots], axis=1).astype(float)
    valid = (d_frame > 0) & np.isfinite(d_pos).all(axis=2) & (hist_frame[slots, :-1] >= 0)
    per_frame = np.where(valid[..., None], d_pos / np.where(d_frame > 0, d_frame, 1)[..., None], 0)
    counts = valid.sum(axis=1)
    velocity = per_frame.sum(axis=1) / np.maximum(counts, 1)[:, None]
    speed = np.hypot(velocity[:, 0], velocity[:, 1])
    velocity *= np.where(speed > cap, cap / np.maximum(speed, 1e-9), 1.0)[:, None]
    has_velocity[slots] = counts > 0
    return last_pos[slots] + velocity * weights[gap][:, None], has_velocity


def _time_term(params: TrackingParams, recent: np.ndarray, lost: np.ndarray, now: float, fps: float,
               t_max: float) -> np.ndarray:
    """TRex's T' per slot: lower for slots lost a while or (re)started only recently."""
    if not params.time_probability:
        return np.ones(len(lost))
    in_last_second = (recent > now - 1.0).sum(axis=1)
    term = (1 - np.minimum(1, np.maximum(0, lost - 1 / fps) / t_max)) * np.minimum(
        1, (in_last_second - 1) / min(fps, 5) + 0.1)
    out = 0.25 + 0.75 * np.clip(term, 0, 1)
    out[lost > t_max] = 0.0
    return out


def _split(detections: Detections | StreamedDetections, row: int, base: int, k: int,
           params: TrackingParams, seeds: np.ndarray | None,
           lasting: bool = False) -> dict[str, np.ndarray] | None:
    """Split the blob in detection ``row`` into ``k`` animals: raise the threshold, or (with the
    predicted positions as ``seeds``) from them; None if it cannot be done.

    In a ``lasting`` contact the predictions come first. Raising the threshold follows the
    darker seam between two bodies, but for animals resting side by side it cuts anew each
    frame along a line that wavers, and their tracklets broke into one-frame pieces; the
    predictions come from the last frame's parts, and dividing the blob between them keeps
    each part on its animal frame after frame.
    """
    if row >= base or row not in detections.pixels:
        return None
    top, left, crop = detections.pixels[row]
    if seeds is not None and len(seeds) < k:
        seeds = _more_seeds(crop, top, left, seeds, k)
    fill = params.split_fill and seeds is not None
    parts = split_blob_fill(crop, top, left, seeds) if fill and lasting else None
    if parts is None and params.split:
        parts = split_blob(crop, top, left, k, params.split_threshold, params.split_global_shrink)
    if parts is None and fill and not lasting:
        parts = split_blob_fill(crop, top, left, seeds)
    return parts


def _more_seeds(crop: np.ndarray, top: int, left: int, seeds: np.ndarray, k: int) -> np.ndarray:
    """``seeds`` and, up to ``k``, the blob's pixels farthest from every seed so far: where an
    animal no prediction points at lies in the blob."""
    ys, xs = np.nonzero(crop)
    pixels = np.column_stack([xs + left, ys + top]).astype(float)
    out = [np.asarray(s, float) for s in seeds]
    if not len(pixels):
        return np.array(out)
    nearest = np.min([np.hypot(*(pixels - s).T) for s in out], axis=0)  # to any seed so far
    while len(out) < k:
        out.append(pixels[int(np.argmax(nearest))])
        nearest = np.minimum(nearest, np.hypot(*(pixels - out[-1]).T))
    return np.array(out)


def _median_areas(history: np.ndarray) -> np.ndarray:
    """Each slot's median recent area (NaN where it has none), as ``np.median`` of the known
    values, for all slots at once (the tracker needs them in every frame)."""
    ordered = np.sort(history, axis=1)  # NaN last
    count = np.isfinite(history).sum(axis=1)
    rows = np.arange(len(history))
    lower = ordered[rows, np.maximum(count - 1, 0) // 2]
    upper = ordered[rows, np.minimum(count // 2, history.shape[1] - 1)]
    return np.where(count > 0, (lower + upper) / 2, np.nan)


def _falls_into(detections: Detections | StreamedDetections, row: int, base: int,
                points: np.ndarray, margin: int = 2) -> np.ndarray:
    """Which of ``points`` (x, y) lie on the blob of detection ``row`` (within ``margin`` px),
    for blobs whose pixels are kept (those that may hold several animals)."""
    out = np.zeros(len(points), bool)
    if row >= base or row not in detections.pixels or not len(points):
        return out
    top, left, crop = detections.pixels[row]
    height, width = crop.shape
    for k, (x, y) in enumerate(points):
        r, c = int(round(y)) - top, int(round(x)) - left
        window = crop[max(0, r - margin): max(0, r + margin + 1), max(0, c - margin): max(0, c + margin + 1)]
        out[k] = -margin <= r < height + margin and -margin <= c < width + margin and bool((window > 0).any())
    return out


def _claimed_blobs(detections: Detections | StreamedDetections, blobs: _Blobs, base: int,
                   best: np.ndarray, held: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """The blob each slot's prediction claims: its likeliest blob (``best``), unless the
    prediction lies away from that blob's body (farther than its radius) and on the pixels of
    a blob that may hold several animals. A merged blob's centre lies between its animals: an
    animal that has just joined a group can be nearer to a neighbour's centre than to the
    group's, and that neighbour's blob would be split in two for nothing (realistic 8 x 3000
    seed 1, frame 1761: a lone animal of 443 px cut into parts of 250 and 193 px)."""
    claimed = best.copy()
    mine = np.flatnonzero((best >= 0) & held)
    if not len(mine):
        return claimed
    radius = np.sqrt(blobs.area[best[mine]] / np.pi)
    away = mine[np.hypot(*(pred[mine] - blobs.pos[best[mine]]).T) > radius]
    if not len(away):
        return claimed
    for b in np.flatnonzero(blobs.alive):  # _falls_into knows which blobs kept their pixels
        on = _falls_into(detections, int(blobs.row[b]), base, pred[away])
        claimed[away[on & (best[away] != b)]] = b
    return claimed


def _whole_animal(area: float, typical: float, offset: np.ndarray,
                  offset_tolerance: float = PART_OFFSET_TOLERANCE) -> bool:
    """Does a split part of this ``area``, ``offset`` (px) from the prediction, look like the
    whole animal whose recent median area is ``typical`` (NaN: unknown)?"""
    if not np.isfinite(typical) or not np.isfinite(offset).all():
        return False
    return (typical / PART_AREA_TOLERANCE <= area <= typical * PART_AREA_TOLERANCE
            and float(np.hypot(*offset)) <= offset_tolerance * np.sqrt(typical))


#: A blob claimed by several slots holds one more animal for each typical animal's area by
#: which it is larger than theirs together, rounded, counting from this share of an animal.
UNCLAIMED_SHARE = 0.75


def _unclaimed(area: float, claimants: np.ndarray, reference: float) -> int:
    """How many animals no slot claims lie in a blob of ``area`` claimed by animals of typical
    areas ``claimants``: the room left over, in animals of the population's ``reference`` size
    (0 where there is none)."""
    if reference <= 0:
        return 0
    left = (area - float(np.sum(claimants))) / reference
    return max(0, int(np.floor(left + 1 - UNCLAIMED_SHARE)))


def _holds_just(area: float, animals: float) -> bool:
    """Is a blob of ``area`` the size of animals whose typical areas add up to ``animals``: not
    much smaller (they lie over each other, :data:`MAX_OVERLAP`), not much larger (another
    animal nobody claimed is inside, :data:`ONE_ANIMAL_GROWTH`)?"""
    return (1 - MAX_OVERLAP) * animals <= area <= ONE_ANIMAL_GROWTH * animals


def _moving(pos: np.ndarray, predicted: np.ndarray, last: np.ndarray, area: float,
            still: float = RETURN_STILL) -> bool:
    """Did the animal move, or is it predicted to move, more than ``still`` animal sizes
    since its last frame?"""
    step = max(float(np.hypot(*(pos - last))), float(np.hypot(*(predicted - last))))
    return not np.isfinite(step) or step > still * np.sqrt(area)


def _wandered(history: np.ndarray, last: np.ndarray, area: float) -> bool:
    """Has the animal moved more than :data:`LASTING_DRIFT` animal sizes from the oldest of
    its recent positions (``history``, NaN where unknown) to ``last``?"""
    known = history[np.isfinite(history).all(axis=1)]
    if not len(known):
        return False
    return float(np.hypot(*(last - known[0]))) > LASTING_DRIFT * np.sqrt(area)


def _nearest(points: np.ndarray, pos: np.ndarray) -> float:
    """Distance (px) from ``pos`` to the nearest of ``points`` (inf when there are none)."""
    return float(np.hypot(*(points - pos).T).min(initial=np.inf)) if len(points) else np.inf


def _part_nearby(blobs: _Blobs, col: int, base: int, area: float) -> bool:
    """Is another part of a split blob within :data:`RETURN_APART` animal sizes of part ``col``
    (the animals lie partly over each other, not side by side)?"""
    others = np.flatnonzero(blobs.row >= base)
    return _nearest(blobs.pos[others[others != col]], blobs.pos[col]) < RETURN_APART * np.sqrt(area)


def _lost_near(pos: np.ndarray, lost_pos: np.ndarray, area: float) -> bool:
    """Was a slot that found nothing this frame last seen within :data:`LOST_NEARBY` animal
    sizes of ``pos``?"""
    return _nearest(lost_pos, pos) <= LOST_NEARBY * np.sqrt(area)


def _ambiguous(prob: np.ndarray, slots: np.ndarray, chosen: np.ndarray, forced: dict[int, int],
               params: TrackingParams) -> np.ndarray:
    """Per slot of all N: was its match a near-tie (another blob almost as likely for it, or
    another slot almost as likely for its blob)?"""
    out = np.zeros(len(chosen), bool)
    if not len(slots) or not prob.shape[1]:
        return out
    for i, slot in enumerate(slots):
        j = chosen[slot]
        if j < 0 or slot in forced:
            continue
        own = prob[i, j]
        row = prob[i].copy()
        row[j] = 0.0
        col = prob[:, j].copy()
        col[i] = 0.0
        rival = max(row.max(initial=0.0), col.max(initial=0.0))
        out[slot] = rival >= max(params.ambiguity_ratio * own, params.matching_threshold)
    return out


def _reattach(blob_pos: np.ndarray, slot_pos: np.ndarray, lost_for: np.ndarray
              ) -> list[tuple[int, int]]:
    """Lost slots → leftover blobs, greedily by TRex's score 0.1 + 1/(distance²·time lost)."""
    if not len(blob_pos) or not len(slot_pos):
        return []
    d2 = ((blob_pos[None] - slot_pos[:, None]) ** 2).sum(axis=2)
    score = 0.1 + 1.0 / np.maximum(d2 * lost_for[:, None], 1e-9)
    pairs = []
    for _ in range(min(score.shape)):
        i, j = np.unravel_index(np.argmax(score), score.shape)
        pairs.append((int(i), int(j)))
        score[i, :] = -np.inf
        score[:, j] = -np.inf
    return pairs


def _with_split_parts(detections: Detections, extra: list[dict[str, np.ndarray]]
                      ) -> tuple[Detections, np.ndarray]:
    """Detections with the parts of split blobs inserted in frame order, and a row → new row
    lookup (``remap[row]`` for detections, ``remap[PART_ROWS + k]`` for the k-th part)."""
    if not extra:
        return detections, _RowMap(np.arange(len(detections), dtype=np.int64), len(detections))
    columns = {}
    for c in COLUMNS:
        parts = [p[c] for p in extra]
        columns[c] = np.concatenate([detections[c], *[np.asarray(p, dtype=detections[c].dtype)
                                                      for p in parts]])
    order = np.argsort(columns["frame"], kind="stable")
    remap = np.empty(len(order), dtype=np.int64)
    remap[order] = np.arange(len(order))
    columns = {c: v[order] for c, v in columns.items()}
    counts = np.bincount(columns["frame"], minlength=detections.n_frames)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    pixels = {int(remap[row]): crop for row, crop in detections.pixels.items()}
    return Detections(columns, offsets, pixels), _RowMap(remap, len(detections))


class _RowMap:
    """``remap[row]`` for rows of the detections (< n) and of split parts (PART_ROWS + k)."""

    def __init__(self, remap: np.ndarray, n: int) -> None:
        self.remap, self.n = remap, n

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows)
        index = np.where(rows >= PART_ROWS, rows - PART_ROWS + self.n, rows)
        return self.remap[index]

