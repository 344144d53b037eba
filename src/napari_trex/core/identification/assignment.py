"""Applying predictions: one identity per tracklet (trex-reference §4.7).

Per tracklet the softmax vectors of its images are averaged. A tracklet gets the best
identity if it has enough predicted frames (max(10, 0.4·fps); TRex: max(5, 0.1·fps)) and is not ambiguous
(second best / best < 0.6). Two tracklets that overlap in time cannot share an identity:
the claim with the higher sig(p)·sig(share of images) wins, sig(x) = 1/(1+e^{2π(0.5−x)}),
and the other is left unassigned. Manual matches are applied first and always win. A
tracklet still without identity gets one *by elimination* when, throughout its frames,
exactly one identity is not taken by another tracklet; one whose vote was too unsure to name it
gets the identity it votes for where no other tracklet holds that identity and the animal can
have come from and gone to its other tracklets (:data:`FREE_VOTE_MIN_PROBABILITY`). What is
still left is retracked with the identities as evidence (:func:`_retrack_gaps`: *inferred*
across a gap).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..detection import ellipse_radius
from ..tracking import TrackingResult
from ..tracklets import IDENTITY_CHANGED, Tracklets

AMBIGUITY = 0.6
# a tracklet's own vote counts with at least this many images (TRex: max(5, 0.1 fps)); the
# short pieces at contacts, whose crops often hold part of a neighbour, were confidently wrong
# on 5-9 images and then misled the retrack of everything around them: they are retracked
# instead, with their vote as one term of the cost
NETWORK_MIN_IMAGES = 10
NETWORK_MIN_SECONDS = 0.4
# ... and a mean probability of at least this for its identity. Measured on 7 videos (5 generated
# with ground truth, zebrafish test_A/B against idtracker.ai), 976 tracklets the network named:
# below 0.7, 82 % right (27 of 33); from 0.7, 99.2 %. Below it the tracklet is retracked like the
# short pieces, its vote one term of the cost next to where the animals were. 0.8 since animals
# joining a group claim its blob (tracking.py): the longer tracklets that gave let unsure votes of
# 0.72-0.8 name tracklets wrongly (realistic 8x3000 seed 2: one 56-frame tracklet at 0.72); both
# together: realistic seeds 1/2/3 99.85/99.80/99.49 -> 99.80/99.875/99.95 %, crowded 10 seeds
# 1/2 91.4/92.6 -> 94.7/95.7 %, zebrafish test_A 99.25 -> 98.45 %, test_B 97.56 -> 98.42 %
# (99.20 / 98.62 % with the second elimination after the retrack)
NETWORK_MIN_PROBABILITY = 0.8
# ... or at least this where the identity it votes for is free throughout the tracklet (no other
# tracklet holds it then, the ones before and after are within reach). The retrack judged such
# tracklets by where each identity is next seen, and at the start of zebrafish test_A gave two
# fish identities that others had after a tangle (votes 0.68-0.77 for the free ones). Replayed on
# 12 captured runs: test_A seeds 0/1 98.07/97.15 -> 99.13/99.13 %, crowded 10 seeds 1/2/3
# 96.49/97.99/98.25 -> 96.99/97.91/98.34 %, the rest unchanged, 58 of 58 tracklets named right.
# At 0.5 it named 88, two of them wrongly (0.60, 0.62; crowded 10 seed 2 97.74 %); at 0.7 test_A
# seed 0 stays at 98.07 %
FREE_VOTE_MIN_PROBABILITY = 0.65
# a mean probability below this says no more than this (_evidence: the log of 0 is -inf)
EVIDENCE_FLOOR = 0.01
# how a tracklet got its identity, as reported in trajectories.csv and the exports; rows of an
# animal hidden in a blob of several (no detection of its own) are "interpolated"
SOURCES = ("network", "manual", "elimination", "inferred")
INTERPOLATED = "interpolated"
LEGACY_SOURCES = {"kinematic": "elimination"}  # names in results folders of earlier versions


def sliding_majority(ids: np.ndarray, window: int, n_classes: int) -> np.ndarray:
    """Per position k, the most frequent id among ``ids[k - window + 1 .. k]`` (ties: the
    smaller id)."""
    onehot = np.eye(n_classes, dtype=np.int64)[ids]
    counts = np.cumsum(onehot, axis=0)
    before = np.vstack([np.zeros((window, n_classes), np.int64), counts[:-window]]) \
        if len(ids) > window else np.zeros_like(counts)
    return (counts - before[:len(ids)]).argmax(axis=1)


def split_suspicious_tracklets(result: TrackingResult, sample_frames: np.ndarray,
                               sample_tracklets: np.ndarray, probs: np.ndarray, fps: float
                               ) -> tuple[TrackingResult, np.ndarray, list[tuple[int, int]]]:
    """Split tracklets of at least 2·fps frames where the predicted identity changes for good.

    TRex (§4.7 step 2) uses a sliding median over 2·fps frames of the per-frame argmax id; a
    median of class numbers means nothing for three or more animals (ids 2, 2, 2, 0, 0, 1, 1
    have the median 1), so here it is the majority vote of the window. Where
    it changes and the new id persists to the end of the window, the tracklet is cut at the
    frame the new id first appears. Returns the updated result, the samples' tracklet ids
    and the (old tracklet, frame) of every cut.
    """
    t = result.tracklets
    window_frames = max(3, int(round(2 * fps)))
    rows = [list(r) for r in zip(t.id, t.individual, t.start, t.end, t.end_reason)]
    tracklet_of = result.tracklet_of.copy()
    new_sample_tracklets = sample_tracklets.copy()
    cuts: list[tuple[int, int]] = []
    for tid in np.unique(sample_tracklets):
        if t.end[tid] - t.start[tid] + 1 < window_frames:
            continue
        member = np.flatnonzero(sample_tracklets == tid)
        order = member[np.argsort(sample_frames[member])]
        frames = sample_frames[order]
        ids = probs[order].argmax(axis=1)
        stride = max(1, int(np.median(np.diff(frames)))) if len(frames) > 1 else 1
        w = max(3, window_frames // stride)
        if len(ids) < 2 * w:
            continue
        medians = sliding_majority(ids, w, probs.shape[1])
        current = medians[w - 1]
        piece = tid
        for k in range(w, len(ids)):
            if medians[k] == current:
                continue
            persists = (medians[k: k + w] == medians[k]).all() and k + w <= len(ids)
            if not persists:
                continue
            new_id = medians[k]
            first = k
            while first > 0 and ids[first - 1] == new_id:  # back to where the new id first shows
                first -= 1
            cut = int(frames[first])
            slot = int(rows[piece][1])
            if not rows[piece][2] < cut <= rows[piece][3]:
                continue
            new = len(rows)
            rows.append([new, slot, cut, rows[piece][3], rows[piece][4]])
            rows[piece][3] = cut - 1
            rows[piece][4] = IDENTITY_CHANGED
            span = slice(cut, rows[new][3] + 1)
            tracklet_of[span, slot] = np.where(tracklet_of[span, slot] == piece, new,
                                               tracklet_of[span, slot])
            later = order[first:]
            new_sample_tracklets[later] = np.where(new_sample_tracklets[later] == piece, new,
                                                   new_sample_tracklets[later])
            cuts.append((int(tid), cut))
            piece, current = new, new_id
    if not cuts:
        return result, sample_tracklets, cuts
    tracklets = Tracklets.from_rows([tuple(r) for r in rows])
    return (TrackingResult(result.detections, result.assignment, tracklets, tracklet_of,
                           result.probability), new_sample_tracklets, cuts)


def _sig(x: float) -> float:
    return 1.0 / (1.0 + np.exp(2 * np.pi * (0.5 - x)))


def _evidence(vector: np.ndarray, n: int, ident: int) -> float:
    """What ``n`` images with mean probabilities ``vector`` say for identity ``ident`` against
    the tracklet's next likeliest: n x log(p_ident / p_next), each at least EVIDENCE_FLOOR.

    Two tracklets that claim one identity at the same time: the one that would lose more by
    giving it up keeps it. TRex compares sig(p) x sig(n / (n + n_other)), where the count
    outweighs the certainty (24 images at 0.84 beat 16 at 0.98, then 0.15 for the identity
    the 24 really were): realistic 8 x 3000 seed 3 lost 52 animal-frames at its end that way.
    """
    others = np.delete(vector, ident)
    return float(n * (np.log(max(vector[ident], EVIDENCE_FLOOR))
                      - np.log(max(others.max(initial=0.0), EVIDENCE_FLOOR))))


def _strength(claim: tuple[float, int, int, int]) -> float:
    """How strongly a network claim (mean probability, images, tracklet, identity) holds: TRex's
    sig(p) weighted by the images behind it."""
    return _sig(claim[0]) * claim[1]


@dataclass
class TrackletIdentities:
    """Per tracklet id: identity (-1 none), mean probability of it, images used, source."""

    identity: np.ndarray
    probability: np.ndarray
    n_samples: np.ndarray
    source: np.ndarray  # one of SOURCES, or "" (none)
    mean_vectors: np.ndarray  # (tracklets, N) averaged softmax (nan where not predicted)


def assign_identities(result: TrackingResult, sample_tracklets: np.ndarray, probs: np.ndarray,
                      n_identities: int, fps: float,
                      manual: dict[int, dict[int, int]] | None = None,
                      max_speed_px: float = 0.0) -> TrackletIdentities:
    t = result.tracklets
    n_tracklets = len(t)
    identity = np.full(n_tracklets, -1, np.int64)
    probability = np.zeros(n_tracklets)
    n_samples = np.zeros(n_tracklets, np.int64)
    source = np.array([""] * n_tracklets, dtype=object)
    vectors = np.full((n_tracklets, n_identities), np.nan)
    for tid in np.unique(sample_tracklets):
        member = sample_tracklets == tid
        vectors[tid] = probs[member].mean(axis=0)
        n_samples[tid] = member.sum()
    # claimed[i] = list of (start, end, tracklet) holding identity i
    claimed: list[list[tuple[int, int, int]]] = [[] for _ in range(n_identities)]

    def overlapping(i: int, a: int, b: int) -> list[int]:
        return [k for s, e, k in claimed[i] if s <= b and a <= e]

    # 1. manual matches first: the tracklet holding that blob in that frame gets the identity
    det = result.detections
    for frame, wanted in (manual or {}).items():
        if not 0 <= frame < len(result.assignment):
            continue
        for ident, blob_id in wanted.items():
            rows = result.assignment[frame]
            for slot, row in enumerate(rows):
                if row >= 0 and int(det["blob_id"][row]) == int(blob_id) and 0 <= ident < n_identities:
                    tid = int(result.tracklet_of[frame, slot])
                    if tid >= 0 and identity[tid] < 0:
                        for other in overlapping(ident, int(t.start[tid]), int(t.end[tid])):
                            identity[other], source[other] = -1, ""
                        claimed[ident] = [c for c in claimed[ident] if identity[c[2]] == ident]
                        identity[tid], probability[tid], source[tid] = ident, 1.0, "manual"
                        claimed[ident].append((int(t.start[tid]), int(t.end[tid]), tid))
    # 2. network predictions, strongest claims first
    min_frames = max(NETWORK_MIN_IMAGES, int(NETWORK_MIN_SECONDS * fps))
    candidates, unsure, below = [], {}, []
    for tid in range(n_tracklets):
        if identity[tid] >= 0 or n_samples[tid] < min_frames or np.isnan(vectors[tid]).any():
            continue
        order = np.argsort(vectors[tid])[::-1]
        best, second = vectors[tid][order[0]], vectors[tid][order[1]] if n_identities > 1 else 0.0
        if best <= 0 or second / best >= AMBIGUITY:
            continue
        claim = (float(best), int(n_samples[tid]), tid, int(order[0]))
        if best >= NETWORK_MIN_PROBABILITY:
            candidates.append(claim)
            continue
        below.append(claim)
        if claim[3] not in unsure or _strength(claim) > _strength(unsure[claim[3]]):
            unsure[claim[3]] = claim
    # an identity the network is unsure of everywhere (a briefly trained network, an animal
    # rarely seen alone) still gets its likeliest tracklet, so that the retrack has a place to
    # start from rather than leaving that animal nameless
    sure = {c[3] for c in candidates}
    candidates += [c for i, c in unsure.items() if i not in sure]
    candidates.sort(key=_strength, reverse=True)
    reach = max_speed_px / fps if max_speed_px > 0 else np.inf
    body = _body_length(result) if max_speed_px > 0 else 0.0

    def unreachable(i: int, tid: int, a: int, b: int) -> list[int]:
        """The claims of ``i`` just before and just after frames a..b that an animal could not
        have come from / gone to in the time (at ``track_max_speed``, plus a body length); a
        tracklet has a blob in each of its frames, so its ends have a place."""
        if not np.isfinite(reach):
            return []
        before = [(e, k) for s_, e, k in claimed[i] if e < a]
        after = [(s_, k) for s_, e, k in claimed[i] if s_ > b]
        out = []
        if before:
            e, k = max(before)
            if np.hypot(*(_position(result, tid, a) - _position(result, k, e))) > reach * (a - e) + body:
                out.append(k)
        if after:
            s_, k = min(after)
            if np.hypot(*(_position(result, k, s_) - _position(result, tid, b))) > reach * (s_ - b) + body:
                out.append(k)
        return out

    for p, n, tid, ident in candidates:
        a, b = int(t.start[tid]), int(t.end[tid])
        # rivals: claims of the identity at the same time, or where the animal cannot have been
        rivals = overlapping(ident, a, b) + unreachable(ident, tid, a, b)
        if rivals:
            # the claim whose images say more for the identity keeps it (see _evidence)
            beaten = all(source[r] != "manual" and _evidence(vectors[tid], n, ident)
                         > _evidence(vectors[r], n_samples[r], ident) for r in rivals)
            if not beaten:
                continue
            for r in rivals:
                identity[r], source[r] = -1, ""
            claimed[ident] = [c for c in claimed[ident] if c[2] not in rivals]
        identity[tid], probability[tid], source[tid] = ident, p, "network"
        claimed[ident].append((a, b, tid))
    # 3. elimination: exactly one identity free throughout the tracklet
    n_frames = len(result.assignment)
    taken = np.zeros((n_frames, n_identities), bool)
    for i in range(n_identities):
        for s, e, _ in claimed[i]:
            taken[s: e + 1, i] = True
    _eliminate(result, identity, source, probability, vectors, taken, n_identities)
    for tid in np.flatnonzero(source == "elimination"):  # claims too, for unreachable()
        claimed[int(identity[tid])].append((int(t.start[tid]), int(t.end[tid]), int(tid)))
    # 3b. an unsure vote for an identity that no other tracklet holds at that time
    for p, n, tid, ident in sorted(below, key=_strength, reverse=True):
        a, b = int(t.start[tid]), int(t.end[tid])
        if identity[tid] >= 0 or p < FREE_VOTE_MIN_PROBABILITY or taken[a: b + 1, ident].any() \
                or unreachable(ident, tid, a, b):
            continue
        identity[tid], probability[tid], source[tid] = ident, p, "network"
        claimed[ident].append((a, b, tid))
        taken[a: b + 1, ident] = True
    # 4. the gaps, retracked with the identities as evidence
    if max_speed_px > 0:
        _retrack_gaps(result, identity, source, probability, vectors, taken, n_identities, fps,
                      max_speed_px, n_samples)
        # every identity the retrack placed leaves fewer free: a tracklet that now has exactly
        # one identity free throughout, and whose images vote for it most, is that animal even
        # where the retrack could not reach it (an animal faster than track_max_speed between
        # one-frame pieces); without the vote, a piece in a cluster was as often a fragment
        _eliminate(result, identity, source, probability, vectors, taken, n_identities,
                   voted=True)
    return TrackletIdentities(identity, probability, n_samples, source, vectors)


def _eliminate(result: TrackingResult, identity: np.ndarray, source: np.ndarray,
               probability: np.ndarray, vectors: np.ndarray, taken: np.ndarray,
               n_identities: int, voted: bool = False) -> None:
    """Give each tracklet without identity the one identity free throughout it, if exactly one
    is (``taken``: frames x identities already placed, updated); with ``voted`` only where the
    tracklet's images vote for that identity more than for any other."""
    t = result.tracklets
    for tid in np.flatnonzero(identity < 0):
        a, b = int(t.start[tid]), int(t.end[tid])
        free = ~taken[a: b + 1].any(axis=0)
        if free.sum() == 1 and n_identities > 1:
            ident = int(np.flatnonzero(free)[0])
            if voted and (np.isnan(vectors[tid]).any() or int(np.argmax(vectors[tid])) != ident):
                continue
            identity[tid], source[tid] = ident, "elimination"
            probability[tid] = float(vectors[tid][ident]) if not np.isnan(vectors[tid]).any() else 0.0
            taken[a: b + 1, ident] = True


def identity_coverage(result: TrackingResult, identities: TrackletIdentities, n_identities: int,
                      hidden: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """Share of all expected animal-frames (N x frames) that carry an identity (``"all"``), and
    the share given by each source (with ``hidden``, :func:`hidden_positions`, also
    "interpolated"). Counting only what was tracked would hide every frame in which an animal
    was never found."""
    expected = n_identities * len(result.assignment)
    frames, slots = np.nonzero((result.assignment >= 0) & (result.tracklet_of >= 0))
    tid = result.tracklet_of[frames, slots]
    ident = identities.identity[tid]
    keep = ident >= 0
    pairs = np.unique(frames[keep] * n_identities + ident[keep], return_index=True)[1]
    sources = identities.source[tid[keep][pairs]]
    n_hidden = 0 if hidden is None else len(hidden["frame"])
    out = {"all": (len(pairs) + n_hidden) / expected if expected else 0.0}
    for name in SOURCES:
        out[name] = float((sources == name).sum() / expected) if expected else 0.0
    if hidden is not None:
        out[INTERPOLATED] = n_hidden / expected if expected else 0.0
    return out


def _position(result: TrackingResult, tracklet: int, frame: int) -> np.ndarray:
    """(x, y) of ``tracklet``'s blob in ``frame``."""
    row = result.assignment[frame, result.tracklets.individual[tracklet]]
    return np.array([result.detections["x"][row], result.detections["y"][row]])


def _body_length(result: TrackingResult) -> float:
    """The animals' length in px: the median major axis of the tracked blobs (at least 1)."""
    rows = result.assignment[result.assignment >= 0]
    return max(float(np.median(result.detections["major"][rows])) if len(rows) else 1.0, 1.0)


HIDDEN_WITHIN_BODIES = 1.0  # a hidden animal's place must lie this close to a detected blob
HIDDEN_EDGE_SECONDS = 1.0  # before the first / after the last sighting, followed this long


def hidden_positions(result: TrackingResult, identities: TrackletIdentities, n_identities: int,
                     fps: float, max_speed_px: float) -> dict[str, np.ndarray]:
    """Where identified animals are while no detection carries them: ``frame``, ``identity``,
    ``x``, ``y`` (px) for the identity-source "interpolated".

    Animals that rest against each other, or cross, often make one blob that cannot be split
    into all of them: for those frames an identity has no row although a person watching knows
    where it is. Between two frames where identity *i* is seen (whatever the source), if it
    could cover the distance at ``track_max_speed``, each frame in between gets the position
    interpolated linearly, provided a detected blob lies within one body length of it (the
    animal is hidden in it, not lost: an animal that left the arena stays missing). The place
    is then kept inside that blob (its ellipse of image moments): over a contact of a second
    the straight line can leave the blob by a body length, while the animal cannot (zebrafish
    test_A, 3-5 fish in one blob for ~10 frames: 45 -> 24 animal-frames placed > 20 px from
    idtracker.ai's position; the generated videos with ground truth: unchanged).

    Before an identity is first seen and after it is last seen (animals touching as the
    recording starts or ends: no sighting on that side to interpolate from), the blob it is
    hidden in is followed from where it was seen, for up to :data:`HIDDEN_EDGE_SECONDS`, while
    one lies within a body length (realistic 8x3000 seed 1: two animals in one blob for the first
    4 and 8 frames, 12 animal-frames without a position before).
    """
    empty = {"frame": np.empty(0, np.int64), "identity": np.empty(0, np.int64),
             "x": np.empty(0), "y": np.empty(0)}
    det = result.detections
    frames, slots = np.nonzero((result.assignment >= 0) & (result.tracklet_of >= 0))
    if not len(frames) or max_speed_px <= 0:
        return empty
    rows = result.assignment[frames, slots]
    ident = identities.identity[result.tracklet_of[frames, slots]]
    body = _body_length(result)
    reach = max_speed_px / fps
    out = {k: [] for k in empty}
    for i in range(n_identities):
        mine = ident == i
        f = frames[mine]
        order = np.argsort(f, kind="stable")
        f, r = f[order], rows[mine][order]
        if not len(f):
            continue
        edge = int(round(HIDDEN_EDGE_SECONDS * fps))
        first, last = int(f[0]), int(f[-1])
        for seen_at, towards in ((r[0], range(first - 1, max(-1, first - 1 - edge), -1)),
                                 (r[-1], range(last + 1, min(len(result.assignment), last + 1 + edge)))):
            for g, p in _follow_hidden(det, np.array([det["x"][seen_at], det["y"][seen_at]]),
                                       towards, body):
                out["frame"].append(g)
                out["identity"].append(i)
                out["x"].append(float(p[0]))
                out["y"].append(float(p[1]))
        jumps = np.flatnonzero(np.diff(f) > 1)
        for k in jumps:
            f0, f1 = int(f[k]), int(f[k + 1])
            p0 = np.array([det["x"][r[k]], det["y"][r[k]]])
            p1 = np.array([det["x"][r[k + 1]], det["y"][r[k + 1]]])
            if np.hypot(*(p1 - p0)) > reach * (f1 - f0):
                continue
            for g in range(f0 + 1, f1):
                p = p0 + (p1 - p0) * (g - f0) / (f1 - f0)
                blobs = det.rows(g)
                if blobs.stop == blobs.start:
                    continue
                d = np.hypot(det["x"][blobs] - p[0], det["y"][blobs] - p[1])
                if d.min() <= HIDDEN_WITHIN_BODIES * body:
                    p = _inside_blob(det, blobs.start + int(np.argmin(d)), p)
                    out["frame"].append(g)
                    out["identity"].append(i)
                    out["x"].append(float(p[0]))
                    out["y"].append(float(p[1]))
    return {"frame": np.array(out["frame"], np.int64), "identity": np.array(out["identity"], np.int64),
            "x": np.array(out["x"], float), "y": np.array(out["y"], float)}


def _follow_hidden(det, p: np.ndarray, frames: range, body: float
                   ) -> Iterator[tuple[int, np.ndarray]]:
    """``(frame, place)`` of an animal hidden in a blob, frame after frame of ``frames`` from
    ``p`` where it was seen: the nearest blob within :data:`HIDDEN_WITHIN_BODIES` body lengths
    holds it, and the place is kept inside that blob (dragged along as it drifts); it stops at
    the first frame with no blob that near (the animal is lost, not hidden)."""
    for g in frames:
        blobs = det.rows(g)
        if blobs.stop == blobs.start:
            return
        d = np.hypot(det["x"][blobs] - p[0], det["y"][blobs] - p[1])
        if d.min() > HIDDEN_WITHIN_BODIES * body:
            return
        p = _inside_blob(det, blobs.start + int(np.argmin(d)), p)
        yield g, p


def _inside_blob(det, row: int, p: np.ndarray) -> np.ndarray:
    """``p`` moved along the line to the blob's centre onto the blob's ellipse (half its major
    and minor axes, at its angle) if it lies outside; unchanged inside."""
    centre = np.array([det["x"][row], det["y"][row]])
    r = float(ellipse_radius(p[0], p[1], *(det[c][row] for c in ("x", "y", "angle", "major", "minor"))))
    return p if r <= 1 else centre + (p - centre) / r


# body lengths of distance worth one e-fold of network probability; 0.3 since the clean parts at
# contacts vote too (one image each, many per gap): 1.0 let runs of confidently wrong parts
# (a neighbour in the crop) outweigh where the animals were (realistic 8x3000 seed 1: 99.10 %
# with 1.0, 99.40 % with 0.3; every benchmark video as good or better with 0.3)
INFERRED_APPEARANCE_WEIGHT = 0.3


#: A link between pieces must be at most this x the distance it saves: its own distance plus
#: how much worse the best matching of that frame's pieces is without it ...
CHAIN_RATIO = 0.4
#: ... and at most this x the distance to any other candidate of either piece. This alone, at
#: 0.5, broke the chains of animals resting side by side, whose parts jitter by a third of
#: their distance (0.58 there); a chain cut there was named by one confidently wrong vote.
#: Replays of the assignment (same tracking and network; rule before -> these two): realistic
#: 8 x 3000 seeds 1 / 2 / 3 99.86 / 99.90 / 99.81 -> 99.92 / 99.89 / 99.96 % right, crowded
#: 10 seeds 1 / 2 95.70 / 95.88 -> 95.84 / 96.32 %, crowded 20 seed 1 91.68 -> 91.76 %,
#: zebrafish test_B 98.62 -> 98.79 % agreement. The saving alone (no nearest rule) lost 0.7
#: points on crowded 20, where animals move more than they lie apart.
NEAREST_RATIO = 0.8


def _links(d: np.ndarray, reach: float) -> dict[int, int]:
    """{row: column} of the distances ``d`` (pieces ending x pieces starting the next frame)
    that link for sure: pairs of the best matching of all of them at once (scipy's
    ``linear_sum_assignment``; a pair farther apart than ``reach`` is impossible, a piece left
    without partner costs ``reach``) whose distance is at most :data:`CHAIN_RATIO` x what the
    pair saves: its distance plus how much the best matching without it costs more, and whose
    pieces are each other's nearest, within :data:`NEAREST_RATIO` x any other candidate.

    Judged pair by pair only, against each piece's nearest alternative (at 0.5, as before),
    two animals side by side whose split parts jitter looked ambiguous although swapping them
    costs several times more than keeping them; judged on the matching only, crowds where
    animals move farther than they lie apart were linked too readily."""
    m, n = d.shape
    if not np.isfinite(reach):  # no speed limit: leaving a piece alone costs more than any link
        reach = 2.0 * float(d.max(initial=0.0)) + 1.0
    cost = np.zeros((m + n, n + m))
    cost[:m, :n] = np.where(d <= reach, d, np.inf)
    cost[:m, n:] = np.where(np.eye(m, dtype=bool), reach, np.inf)  # ends without partner
    cost[m:, :n] = np.where(np.eye(n, dtype=bool), reach, np.inf)  # starts without partner
    rows, cols = linear_sum_assignment(cost)
    best = cost[rows, cols].sum()
    out = {}
    for i, j in zip(rows, cols):
        if i >= m or j >= n:
            continue
        own = cost[i, j]
        # each is the other's nearest, clearly nearer than any other candidate of either ...
        others = np.concatenate([np.delete(d[i], j), np.delete(d[:, j], i)])
        if int(d[i].argmin()) != j or int(d[:, j].argmin()) != i or (
                len(others) and own > NEAREST_RATIO * others.min()):
            continue
        # ... and the best matching without the pair is clearly worse
        cost[i, j] = np.inf
        r2, c2 = linear_sum_assignment(cost)
        without = cost[r2, c2].sum()
        cost[i, j] = own
        if own <= CHAIN_RATIO * (own + without - best):
            out[int(i)] = int(j)
    return out


def _chains(result: TrackingResult, pieces: np.ndarray, reach: float) -> list[list[int]]:
    """Unidentified pieces linked frame to frame into chains where the link is unambiguous.

    Through a long contact the tracker cuts every frame (the blob is split anew each frame, and
    a split is never trusted to continue a tracklet), yet the split parts follow the animals
    closely. Piece U starting the frame after piece T ends continues T when the pair is part
    of the best matching of the pieces ending and starting there (:func:`_links`) and the
    matching without it is clearly worse. A chain is then given one identity as a whole,
    decided at its two ends, where the animal was last and is next seen with an identity."""
    t = result.tracklets
    ending: dict[int, list[int]] = {}
    starting: dict[int, list[int]] = {}
    for tid in pieces:
        ending.setdefault(int(t.end[tid]), []).append(int(tid))
        starting.setdefault(int(t.start[tid]), []).append(int(tid))
    after: dict[int, int] = {}
    for frame, enders in ending.items():
        starters = starting.get(frame + 1)
        if not starters:
            continue
        a = np.array([_position(result, k, frame) for k in enders])
        b = np.array([_position(result, k, frame + 1) for k in starters])
        d = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
        for i, j in _links(d, reach).items():
            after[enders[i]] = starters[j]
    linked = set(after.values())
    chains = []
    for tid in pieces:
        if int(tid) in linked:
            continue
        chain = [int(tid)]
        while chain[-1] in after:
            chain.append(after[chain[-1]])
        chains.append(chain)
    return chains


def _retrack_gaps(result: TrackingResult, identity: np.ndarray, source: np.ndarray,
                  probability: np.ndarray, vectors: np.ndarray, taken: np.ndarray, n_identities: int,
                  fps: float, max_speed_px: float, n_samples: np.ndarray) -> None:
    """Retrack what is left with the identities as evidence (TRex's retrack with visual
    identification, done on the gaps only).

    Pieces without identity (a few frames at a contact, split parts of a touching pair, an
    animal lost and found again) in gaps of up to :data:`MAX_WINDOW_SECONDS` are given their
    identities all at once (:func:`_retrack_windows`). The others are linked into chains where
    frame-to-frame continuity is unambiguous (:func:`_chains`). A chain is a candidate for
    every identity that is free throughout its frames and can reach it at ``track_max_speed``
    from the piece of that identity before it and to the piece after it. Each (chain, identity)
    costs the distance, in body lengths, from where the identity is expected at the chain's ends
    (interpolated between its pieces, or where it was last / will next be seen) plus -log of the
    network's probability for it where the chain's pieces have images; the cheapest pairs are
    taken first, and rounds repeat since every chain placed is a new neighbour; an identity can
    also stay hidden in a blob of several animals throughout its tracklet (:data:`HOST_COST`).
    The pieces of a chain no identity fits as a whole are planned jointly once more among the
    chains now placed, then one by one; a piece no identity can reach keeps none. Last, where an identity's path
    jumps, two identities' inferred pieces are swapped over a stretch of frames where that makes
    their paths no longer and, with the pieces' votes, shorter (:func:`_untangle`).
    """
    body = _body_length(result)
    reach = max_speed_px / fps
    open_pieces = np.array([k for k in np.flatnonzero(identity < 0) if source[k] != "removed"], np.int64)
    # a vote of a few images at a contact is often confidently wrong (a neighbour in the crop):
    # it counts in proportion to its images, and never more than -log(APPEARANCE_FLOOR)
    trust = np.minimum(1.0, n_samples / NETWORK_MIN_IMAGES)
    window_frames = max(2, int(round(MAX_WINDOW_SECONDS * fps)))
    link_frames = max(1, int(round(WINDOW_LINK_SECONDS * fps)))
    solved = _retrack_windows(result, identity, source, probability, vectors, trust, taken,
                              n_identities, body, reach, open_pieces, window_frames, link_frames)
    open_pieces = open_pieces[~np.isin(open_pieces, solved)]
    long_frames = max(1, int(round(SURE_CHAIN_SECONDS * fps)))
    room = _room(result, max(1, int(round(HOST_MIN_SECONDS * fps))))
    _place_chains(_chains(result, open_pieces, reach), result, identity, source, probability,
                  vectors, taken, n_identities, body, reach, long_frames, room)
    # what no identity fits as a whole chain: planned jointly once more, now that the chains
    # around it are placed (the windows are smaller, and the plan allows an animal a body length
    # beyond track_max_speed; zebrafish test_A: fish darting at the start of a contact were left
    # without identity, 99.25 -> 99.55 % agreement with idtracker.ai, test_B 98.50 -> 98.62 %,
    # the generated videos within 0.06 points) ...
    left = open_pieces[identity[open_pieces] < 0]
    _retrack_windows(result, identity, source, probability, vectors, trust, taken, n_identities,
                     body, reach, left, window_frames, link_frames)
    # ... and what is still left, piece by piece
    _place_chains([[int(k)] for k in open_pieces if identity[k] < 0], result, identity, source,
                  probability, vectors, taken, n_identities, body, reach, long_frames, room)
    # ... and last, identities carried onto a neighbour inside a long clump are given back
    _untangle(result, identity, source, probability, vectors, trust, taken, n_identities, body,
              max(1, int(round(UNTANGLE_MAX_SECONDS * fps))))


HIDDEN_COST = 1.0  # per frame an identity has no piece, in body lengths of movement
UNCLAIMED_COST = 1.0  # per frame a piece is left without identity
APPEARANCE_FLOOR = 0.05  # a vote costs at most -log(this): a crop can be confidently wrong
# the plan carries this many of the likeliest sequences from frame to frame (a beam search, see
# _window_beam). It used to list every way to name a frame's pieces and left a gap with more than
# 60 to the chains, which swapped fish in clusters of 4-7: zebrafish test_A 99.575 -> 99.825 %
# agreement with idtracker.ai (a replay of the assignment, same tracking and network; five
# animals wandering side by side in the tests: 27 of 2,832 pieces on the wrong animal -> 0).
# test_B and crowded 10 x 3000 unchanged (within 2 animal-frames); realistic 8 x 3000 seed 2
# 99.921 -> 99.887 % (a cluster of 4 where one animal was cut in two and a neighbour's identity
# took the extra part) and the crowd of 20 97.49 -> 97.45 % (places of animals hidden in blobs,
# which follow the identities). Where every way could be listed, the beam finds the same plan
# (99 of 99 gaps of four captured runs, and the tests)
BEAM_STATES = 50
# a longer window (animals clustered for seconds, split anew every frame) is left to the chains
# too: over hundreds of frames of split parts, continuity alone drifted onto the wrong animal
# (realistic 8x3000 seed 2: 99.53 % right with this limit, 98.99 % without; 0.6 - 2 s alike)
MAX_WINDOW_SECONDS = 1.0
# pieces are solved in one window where they come within track_max_speed's reach of each other
# plus this many body lengths, in one frame or up to WINDOW_LINK_SECONDS apart (see _windows).
# Replays of the assignment (same tracking and network): zebrafish test_A / test_B 99.125 /
# 98.20 -> 99.25 / 98.50 % agreement with idtracker.ai, the generated videos within 0.02 points;
# reaching across 1 frame only (0.04 s) left an animal hidden for two frames in a window of its
# own (8 pieces wrong in 100 two-group wanderings of the tests, 2 from 0.08 s)
WINDOW_NEAR_BODIES = 0.5
WINDOW_LINK_SECONDS = 0.12


class _Known:
    """Where each identity is seen on an identified piece: its last place at or before a
    frame, its next at or after."""

    def __init__(self, result: TrackingResult, identity: np.ndarray, n_identities: int) -> None:
        t = result.tracklets
        self.result = result
        self.pieces = []
        for i in range(n_identities):
            p = np.flatnonzero(identity == i)
            p = p[np.argsort(t.start[p], kind="stable")]
            self.pieces.append((p, t.start[p], t.end[p]))

    def seen(self, i: int) -> bool:
        return len(self.pieces[i][0]) > 0

    def before(self, i: int, g: int) -> tuple[int, np.ndarray] | None:
        p, s, e = self.pieces[i]
        k = int(np.searchsorted(s, g, side="right")) - 1
        if k < 0:
            return None
        f = int(min(e[k], g))
        return f, _position(self.result, int(p[k]), f)

    def after(self, i: int, g: int) -> tuple[int, np.ndarray] | None:
        p, s, e = self.pieces[i]
        k = int(np.searchsorted(e, g, side="left"))
        if k >= len(p):
            return None
        f = int(max(s[k], g))
        return f, _position(self.result, int(p[k]), f)


def _windows(result: TrackingResult, pieces: np.ndarray, body: float, reach: float,
             link_frames: int) -> list[np.ndarray]:
    """Open pieces grouped into windows to be solved together: connected components of the
    pieces that lie within reach of each other, in one frame or up to ``link_frames`` frames
    apart (``reach`` per frame, plus :data:`WINDOW_NEAR_BODIES` body lengths).

    Grouped by time alone (every piece that overlaps or follows another), a crowd where some
    contact goes on somewhere at every moment made one window of the whole video, which the
    joint plan cannot take (crowded 10 x 3000: 6,300 of 7,000 pieces in windows of more than
    100 frames, all left to the chains); each contact apart is a window of its own. Across a
    few frames, since an animal hidden for a frame or two in a neighbour's blob comes back as a
    piece that must be weighed with the others of its group."""
    t = result.tracklets
    if not len(pieces):
        return []
    alive: dict[int, list[tuple[int, np.ndarray]]] = {}
    for n, k in enumerate(pieces):
        for g in range(int(t.start[k]), int(t.end[k]) + 1):
            alive.setdefault(g, []).append((n, _position(result, int(k), g)))
    rows, cols = [], []
    for g, here in alive.items():
        a_idx = np.array([n for n, _ in here])
        a_xy = np.array([p for _, p in here])
        for dt in range(0, link_frames + 1):
            there = alive.get(g + dt)
            if not there:
                continue
            b_xy = np.array([p for _, p in there])
            d = np.hypot(a_xy[:, None, 0] - b_xy[None, :, 0], a_xy[:, None, 1] - b_xy[None, :, 1])
            i, j = np.nonzero(d <= reach * max(dt, 1) + WINDOW_NEAR_BODIES * body)
            rows.append(a_idx[i])
            cols.append(np.array([n for n, _ in there])[j])
    m = len(pieces)
    edges = (np.concatenate(rows), np.concatenate(cols)) if rows else (np.empty(0, int), np.empty(0, int))
    _, component = connected_components(coo_matrix((np.ones(len(edges[0])), edges), shape=(m, m)),
                                        directed=False)
    # each component's pieces in their given order (one stable sort, not a pass per component)
    by_component = np.argsort(component, kind="stable")
    _, first, count = np.unique(component, return_index=True, return_counts=True)
    groups = np.split(pieces[by_component], np.cumsum(count)[:-1])
    # in time, ties by the group's first piece (the order they are solved in matters)
    order = sorted(range(len(groups)), key=lambda c: (int(t.start[groups[c]].min()), int(first[c])))
    return [groups[c] for c in order]


def _retrack_windows(result: TrackingResult, identity: np.ndarray, source: np.ndarray,
                     probability: np.ndarray, vectors: np.ndarray, trust: np.ndarray,
                     taken: np.ndarray, n_identities: int, body: float, reach: float,
                     pieces: np.ndarray, max_frames: int, link_frames: int) -> np.ndarray:
    """Give the open pieces of each window of time their identities all at once: the most
    likely sequence of (identity -> piece) assignments, frame by frame (Viterbi).

    Placing chains of pieces one at a time, cheapest first, swapped animals in contacts: a
    chain that links across two touching animals is placed whole, and an identity's place in
    one frame is not weighed against where the same identity is put in the next (realistic
    videos: ~2/3 of the wrong animal-frames were split parts given the identity of the animal
    beside). Here each frame's state says which free identity holds which open piece (or none:
    hidden); a piece keeps one identity over its frames; the cost is the movement of every
    identity from frame to frame in body lengths, from where it was last seen before the window
    to where it is expected after it (a hidden identity stays where it was last placed),
    :data:`HIDDEN_COST` per hidden identity and
    :data:`UNCLAIMED_COST` per piece without identity per frame, and -log of the network's
    probability where a piece has images. An identity may only take a piece it can reach at
    ``track_max_speed`` (plus a body length) from where it was last and is next seen. Windows
    longer than :data:`MAX_WINDOW_SECONDS` are left to the chains. Returns the pieces decided
    (given an identity or deliberately none).
    """
    t = result.tracklets
    known = _Known(result, identity, n_identities)
    solved: list[np.ndarray] = []
    for window in _windows(result, pieces, body, reach, link_frames):
        a, b = int(t.start[window].min()), int(t.end[window].max())
        ids = [i for i in range(n_identities) if known.seen(i) and not taken[a: b + 1, i].all()]
        if not ids or b - a + 1 > max_frames:
            continue
        plan = _window_beam(result, window, ids, a, b, known, taken, vectors, trust, body, reach)
        if plan is None:
            continue
        for k, i in plan.items():
            identity[k], source[k] = i, "inferred"
            probability[k] = 0.0 if np.isnan(vectors[k]).any() else float(vectors[k][i])
            taken[int(t.start[k]): int(t.end[k]) + 1, i] = True
        solved.append(window)
    return np.concatenate(solved) if solved else np.empty(0, np.int64)


def _expected(known: _Known, i: int, g: int) -> tuple[np.ndarray, tuple | None, tuple | None]:
    """Where identity ``i`` is expected in frame ``g`` (on the line between where it was last
    and is next seen) and those two sightings."""
    before, after = known.before(i, g), known.after(i, g)
    if before is not None and after is not None:
        span = after[0] - before[0]
        w = (g - before[0]) / span if span > 0 else 0.0
        return before[1] + (after[1] - before[1]) * w, before, after
    return (before or after)[1], before, after


def _frame_view(result: TrackingResult, window: np.ndarray, ids: list[int], g: int,
                known: _Known, taken: np.ndarray, vectors: np.ndarray, trust: np.ndarray,
                body: float, reach: float) -> tuple[np.ndarray, ...]:
    """What the plans of a window weigh in frame ``g``: the window's pieces alive then, their
    places, where each identity of ``ids`` is expected, which pieces each may take (``ok``,
    identities x pieces: free then, and within ``track_max_speed`` plus a body length of where
    it was last and is next seen) and the cost of the network's vote for each (identity,
    piece) where a piece with images starts."""
    t = result.tracklets
    alive = window[(t.start[window] <= g) & (t.end[window] >= g)]
    here = np.array([_position(result, int(k), g) for k in alive]).reshape(-1, 2)
    base = np.empty((len(ids), 2))
    ok = np.zeros((len(ids), len(alive)), bool)
    for j, i in enumerate(ids):
        base[j], before, after = _expected(known, i, g)
        if taken[g, i]:
            continue
        ok[j] = True
        for seen in (before, after):
            if seen is not None:
                ok[j] &= np.hypot(*(here - seen[1]).T) <= reach * abs(g - seen[0]) + body
    appearance = np.zeros((len(ids), len(alive)))
    for d, k in enumerate(alive):
        if int(t.start[k]) == g:
            appearance[:, d] = _vote_costs(vectors[k: k + 1], trust[k: k + 1])[0, ids]
    return alive, here, base, ok, appearance


def _vote_costs(vectors: np.ndarray, trust: np.ndarray) -> np.ndarray:
    """What each piece's vote costs each identity in the retrack's plans (pieces x identities):
    :data:`INFERRED_APPEARANCE_WEIGHT` x its trust x -log of its probability, at most
    -log(:data:`APPEARANCE_FLOOR`); 0 for a piece without images."""
    costs = INFERRED_APPEARANCE_WEIGHT * trust[:, None] * -np.log(
        np.maximum(np.nan_to_num(vectors, nan=1.0), APPEARANCE_FLOOR))
    costs[np.isnan(vectors).any(axis=1)] = 0.0
    return costs


IMPOSSIBLE = 1e9  # the cost of what ok forbids, in the beam's assignments


def _window_beam(result: TrackingResult, window: np.ndarray, ids: list[int], a: int, b: int,
                 known: _Known, taken: np.ndarray, vectors: np.ndarray, trust: np.ndarray,
                 body: float, reach: float) -> dict[int, int] | None:
    """The Viterbi of :func:`_retrack_windows` over frames a..b, {piece: identity}, as a beam
    search: a cluster of five animals has hundreds of ways to name a frame's pieces, so only the
    :data:`BEAM_STATES` likeliest sequences are carried from frame to frame. Each carries on as
    its pieces do (a piece keeps its identity, or its having none); the identities it leaves
    free take the pieces that start (or stay hidden; each piece taken or left unclaimed) by the
    best assignment (``linear_sum_assignment``) and, as alternatives, the best assignments
    without each of its pairs; sequences that end in the same state are merged, the cheaper
    kept. None when no sequence keeps the rules."""
    t = result.tracklets
    n_s = len(ids)
    ends = t.end[window]
    index = {int(k): w for w, k in enumerate(window)}  # a piece's place in the window
    start_pos = np.array([(known.before(i, a - 1) or known.after(i, a))[1] for i in ids], float)
    beam: list[tuple[float, tuple[int, ...], np.ndarray]] = [(0.0, (-1,) * n_s, start_pos)]
    history: list[list[tuple[tuple[int, ...], int]]] = []  # per frame: (holds, previous state)
    for g in range(a, b + 1):
        alive, here, base, ok, appearance = _frame_view(result, window, ids, g, known, taken,
                                                        vectors, trust, body, reach)
        column = {int(k): d for d, k in enumerate(alive)}
        new = [d for d, k in enumerate(alive) if int(t.start[k]) == g]
        following: dict[tuple[int, ...], tuple[float, np.ndarray, int]] = {}
        for previous, (cost, holds, pos) in enumerate(beam):
            pos, holds = pos.copy(), list(holds)
            free, kept = [], set()
            for j, w in enumerate(holds):  # w: the piece held, as an index into the window
                if w >= 0 and ends[w] >= g:  # the piece goes on: so does its identity
                    d = column[int(window[w])]
                    if not ok[j, d]:
                        break
                    cost += np.hypot(*(here[d] - pos[j])) / body
                    pos[j] = here[d]
                    kept.add(d)
                    continue
                holds[j] = -1
                if taken[g, ids[j]]:
                    pos[j] = base[j]  # elsewhere, on a piece of its own
                else:
                    free.append(j)
            else:
                cost += UNCLAIMED_COST * sum(1 for d in range(len(alive))
                                             if d not in kept and d not in new)
                for extra, taking in _assignments(free, new, here, pos, ok, appearance, body):
                    h, p = list(holds), pos.copy()
                    for j, d in taking.items():
                        h[j] = index[int(alive[d])]
                        p[j] = here[d]
                    key = tuple(h)
                    if key not in following or following[key][0] > cost + extra:
                        following[key] = (cost + extra, p, previous)
        if not following:
            return None
        best = sorted(following.items(), key=lambda kv: kv[1][0])[:BEAM_STATES]
        beam = [(c, key, p) for key, (c, p, _) in best]
        history.append([(key, previous) for key, (_, _, previous) in best])
    end_pos = np.array([_expected(known, i, b + 1)[0] for i in ids])
    s = int(np.argmin([c + np.hypot(*(p - end_pos).T).sum() / body for c, _, p in beam]))
    plan: dict[int, int] = {}
    for g in range(b, a - 1, -1):
        holds, previous = history[g - a][s]
        for j, w in enumerate(holds):
            if w >= 0:
                plan.setdefault(int(window[w]), ids[j])
        s = previous
    return plan


def _assignments(free: list[int], new: list[int], here: np.ndarray, pos: np.ndarray,
                 ok: np.ndarray, appearance: np.ndarray, body: float
                 ) -> Iterator[tuple[float, dict[int, int]]]:
    """The best ways for the identities ``free`` to take the pieces ``new`` (or hide, each at
    :data:`HIDDEN_COST`; a piece left costs :data:`UNCLAIMED_COST`): the best assignment and the
    best without each of its pairs, as (cost, {identity: piece})."""
    m, n = len(free), len(new)
    cost = np.full((m + n, n + m), IMPOSSIBLE)
    if m and n:
        rows, cols = np.ix_(free, new)
        step = np.hypot(here[new][None, :, 0] - pos[free][:, None, 0],
                        here[new][None, :, 1] - pos[free][:, None, 1]) / body
        cost[:m, :n] = np.where(ok[rows, cols], step + appearance[rows, cols], IMPOSSIBLE)
    cost[np.arange(m), n + np.arange(m)] = HIDDEN_COST
    cost[m + np.arange(n), np.arange(n)] = UNCLAIMED_COST
    cost[m:, n:] = 0.0

    def solve() -> tuple[float, dict[int, int], list[tuple[int, int]]] | None:
        r, c = linear_sum_assignment(cost)
        total = float(cost[r, c].sum())
        if total >= IMPOSSIBLE:
            return None
        pairs = [(int(i), int(j)) for i, j in zip(r, c) if i < m]
        return total, {free[i]: new[j] for i, j in pairs if j < n}, pairs

    best = solve()
    if best is None:
        return
    yield best[0], best[1]
    for i, j in best[2]:
        kept, cost[i, j] = cost[i, j], IMPOSSIBLE
        other = solve()
        cost[i, j] = kept
        if other is not None:
            yield other[0], other[1]


#: a chain this long that only one identity can reach keeps that identity from chains running at the
#: same time that could take another (:func:`_needed_elsewhere`). Replays of the assignment (same
#: tracking and network; rule off -> on): 3 mice resting side by side for 3 s 97.51 -> 100 % right,
#: crowd of 20 97.447 -> 97.640 %, crowded 10 seeds 1 / 2 / 3 97.570 / 95.433 / 98.747 -> 97.470 /
#: 95.633 / 98.700 %, realistic 8 x 3000 and zebrafish test_A / test_B unchanged. For every chain,
#: however short: crowded 10 seed 1 97.14 %; short chains are cheap to leave to the later passes.
SURE_CHAIN_SECONDS = 2.0
# A tracklet whose blob holds several animals (its mean area 1.5 animals' or more) can hide
# one more identity for the whole tracklet (as many more as its area holds): the chain rounds
# weigh that against every chain, at where the blob is against where the identity was seen
# plus HOST_COST. Where nothing could, the identity of an animal hidden in such a blob for
# seconds was placed on whatever part lay within reach (crowd of 20 seed 2, frames 2836-2957:
# parts broken off neighbours 40-100 px away, while the animal shared a blob with another).
# Replays of the assignment (same tracking and network), without -> with: crowd of 20 seeds
# 1 / 2 99.348 / 98.687 -> 99.365 / 98.930 %, crowded 10 x 3000 seed 3 99.343 -> 99.380 %,
# seeds 1 / 2, realistic 8 x 3000 seeds 1-3, zebrafish test_A / test_B and the sample
# unchanged. HOST_COST 0 the same, 1.0 98.73 % (seed 2); from 0.5 s of tracklet 98.79 %;
# without HOST_SLACK 98.86 %. A hidden identity is taken in those frames (nothing else gets
# it, elimination included); its place is interpolated as any hidden animal's
# (:func:`hidden_positions`): put at the blob itself, 98.885 % (seed 2).
#: a hidden identity costs this many body lengths more than a piece as far away
HOST_COST = 0.5
#: tracklets this long or longer can hide an animal (a blob of one frame is as often two
#: animals cut wrongly; crowded 10 x 3000 seed 1 lost 0.2 points with them)
HOST_MIN_SECONDS = 0.2
#: a blob is larger than the animals it holds: where they were seen may lie this many body
#: lengths beyond track_max_speed
HOST_SLACK = 1.0
#: a blob can hide one more animal from this many single animals' area on (the median tracked
#: blob), two more from one more, ...; from 1.3 the crowd of 20 seeds 1 / 2 lost 0.5 / 0.25
#: points (two animals overlapping make a blob of 1.3-1.45, but so does a large single one)
HOST_AREA = 1.5


def _needed_elsewhere(c: int, i: int, options: dict[int, set[int]], long: dict[int, set[int]],
                      span: dict[int, tuple[int, int]], chains: list[list[int]], identity: np.ndarray,
                      taken: np.ndarray) -> bool:
    """Whether identity ``i`` is the only one left for another unplaced long chain (``long``: its
    candidate identities) that runs at the same time as chain ``c``, while ``c`` (``options``) could
    still take another: then ``c`` leaves ``i`` to it.

    The chains are placed cheapest pair first, one pair at a time. Two mice resting side by side for
    three seconds (split anew every frame, a chain of parts each) were swapped: the right-hand chain
    was a little cheaper for the left-hand mouse's identity (its parts' votes, confidently wrong for
    both, leaned that way) and took it; the left-hand chain, which only that identity could reach,
    was left without one, and its parts then went one by one to the other mouse's identity."""
    def free(k: int, j: int) -> bool:
        a, b = span[k]
        return not taken[a: b + 1, j].any()

    a, b = span[c]
    if not any(j != i and free(c, j) for j in options[c]):
        return False
    for other, theirs in long.items():
        if other == c or identity[chains[other][0]] >= 0 or i not in theirs:
            continue
        oa, ob = span[other]
        if ob < a or oa > b:
            continue
        if [j for j in theirs if free(other, j)] == [i]:
            return True
    return False


def _nearest_sighting(before: tuple[int, np.ndarray], after: tuple[int, np.ndarray], g: int
                      ) -> np.ndarray:
    """Where an identity is expected in frame ``g`` of a chain: at its sighting nearer in time
    (the one before on a tie).

    The line between the two sightings assumes an animal that moves steadily across the gap; in
    a contact animals rest for seconds and then move off, so a resting animal's chain was
    weighed against a point drifting towards where it would be seen next, and lost its identity
    to a neighbour's (crowded 10 x 3000 seed 1: an animal resting 1 s beside three others, its
    parts left without identity while its own was placed on them). Replays of the assignment
    (same tracking and network), line -> nearer sighting: crowded 10 x 3000 seeds 1 / 2 / 3
    97.470 / 95.633 / 98.700 -> 97.803 / 95.803 / 98.713 %, crowd of 20 97.640 -> 97.632 %,
    8 animals in a cohesive group 98.925 -> 99.019 %; realistic 8 x 3000 seeds 1 / 2, zebrafish
    test_A / test_B, 3 mice unchanged; older captures (session 23 networks): crowded 10 seeds
    1 / 2 / 3 +0.15 / -0.09 / 0 points, test_B +0.05, the others unchanged. The same within
    0.02 points when the line is kept for sightings up to 5 or 25 frames apart."""
    return before[1] if g - before[0] <= after[0] - g else after[1]


def _miss(known: _Known, i: int, a: int, b: int, here_a: np.ndarray, here_b: np.ndarray,
          reach: float, slack: float = 0.0) -> float | None:
    """How far (px) a piece from ``here_a`` in frame ``a`` to ``here_b`` in ``b`` lies from
    where identity ``i`` is expected (free throughout a..b: its last sighting before, its next
    after); None where it cannot have come from or gone to them at ``reach`` px per frame
    (plus ``slack``) or is never seen."""
    before, after = known.before(i, a - 1), known.after(i, b + 1)
    if before is None and after is None:
        return None
    if before is not None and np.hypot(*(here_a - before[1])) > reach * (a - before[0]) + slack:
        return None
    if after is not None and np.hypot(*(after[1] - here_b)) > reach * (after[0] - b) + slack:
        return None
    if before is not None and after is not None:
        # where it was seen nearest in time, not on the line between the two sightings:
        # animals rest, then move (see _nearest_sighting)
        return (np.hypot(*(here_a - _nearest_sighting(before, after, a)))
                + np.hypot(*(here_b - _nearest_sighting(before, after, b)))) / 2
    if before is not None:
        return float(np.hypot(*(here_a - before[1])))
    return float(np.hypot(*(after[1] - here_b)))


def _place_chains(chains: list[list[int]], result: TrackingResult, identity: np.ndarray,
                  source: np.ndarray, probability: np.ndarray, vectors: np.ndarray,
                  taken: np.ndarray, n_identities: int, body: float, reach: float,
                  long_frames: int, room: np.ndarray) -> None:
    """The rounds of :func:`_retrack_gaps`: cheapest (chain, identity) pairs first, except that a
    chain of ``long_frames`` or more that only one identity can reach gets it. ``room``: per
    tracklet, how many more animals its blob can hide (:func:`_room`; used up here)."""
    t = result.tracklets

    for _ in range(4):
        known = _Known(result, identity, n_identities)  # chains placed so far count
        candidates = []
        for c, chain in enumerate(chains):
            if identity[chain[0]] >= 0:
                continue
            first, last = chain[0], chain[-1]
            a, b = int(t.start[first]), int(t.end[last])
            here_a, here_b = _position(result, first, a), _position(result, last, b)
            seen = [k for k in chain if not np.isnan(vectors[k]).any()]
            appearance = np.mean([vectors[k] for k in seen], axis=0) if seen else None
            for i in np.flatnonzero(~taken[a: b + 1].any(axis=0)):
                miss = _miss(known, int(i), a, b, here_a, here_b, reach)
                if miss is None:
                    continue
                cost = miss / body
                if appearance is not None:
                    cost += INFERRED_APPEARANCE_WEIGHT * -np.log(max(float(appearance[i]), 1e-3))
                candidates.append((cost, c, int(i)))
        # a blob of several animals can hide one more of them for its whole tracklet (see
        # HOST_COST), weighed against the pieces as they are
        for h in np.flatnonzero((room > 0) & (identity >= 0)):
            a, b = int(t.start[h]), int(t.end[h])
            here_a, here_b = _position(result, h, a), _position(result, h, b)
            for i in np.flatnonzero(~taken[a: b + 1].any(axis=0)):
                miss = _miss(known, int(i), a, b, here_a, here_b, reach, slack=HOST_SLACK * body)
                if miss is not None:
                    candidates.append((miss / body + HOST_COST, -1 - int(h), int(i)))
        changed = False
        options: dict[int, set[int]] = {}
        for _, c, i in candidates:
            if c < 0:
                continue
            options.setdefault(c, set()).add(i)
        span = {c: (int(t.start[chains[c][0]]), int(t.end[chains[c][-1]])) for c in options}
        long = {c: ids for c, ids in options.items() if span[c][1] - span[c][0] + 1 >= long_frames}
        for cost, c, i in sorted(candidates):
            if c < 0:
                h = -1 - c
                a, b = int(t.start[h]), int(t.end[h])
                if room[h] > 0 and not taken[a: b + 1, i].any():
                    room[h] -= 1
                    taken[a: b + 1, i] = True
                    changed = True
                continue
            chain = chains[c]
            a, b = span[c]
            if identity[chain[0]] >= 0 or taken[a: b + 1, i].any():
                continue
            if long and _needed_elsewhere(c, i, options, long, span, chains, identity, taken):
                continue
            for k in chain:
                identity[k], source[k] = i, "inferred"
                probability[k] = 0.0 if np.isnan(vectors[k]).any() else float(vectors[k][i])
                taken[int(t.start[k]): int(t.end[k]) + 1, i] = True
            changed = True
        if not changed:
            break


# Last, the inferred pieces of two identities are swapped over a stretch of frames where one of
# them jumps (:func:`_untangle`). Chains are placed one at a time against sightings that can lie
# hundreds of frames away; in a resting clump of five (crowded 10 x 3000 seed 1, frames 141-275)
# one link to a neighbour's part as the clump began carried one animal's identity onto another
# for 130 frames, with a jump of more than a body length where it went over. Replays of the
# assignment (same tracking and network), without -> with: see README ("Last, where an
# identity's path jumps"). Counted on the paths alone, the swaps lost on the crowds (crowded
# 10 seed 1 98.60 -> 98.55 %): the votes of the many parts in a stretch say which way round is
# right; counted with the votes but without the rule that the paths get no longer, the parts
# of two animals resting side by side for 146 frames voted them swapped (realistic 8 x 3000
# seed 2 99.97 -> 98.88 %).
#: a swap begins or ends where an identity's path jumps at least this far between two
#: sightings (body lengths) ...
UNTANGLE_JUMP = 0.5
#: ... the two paths together get no longer, and shorter plus the votes of the pieces swapped
#: (as in the windows) gain at least this many body lengths
UNTANGLE_MIN_GAIN = 0.5
#: the other identity was last seen within this many body lengths of the one that jumps (as
#: good as any distance on the crowds; it bounds the work in large groups)
UNTANGLE_NEAR = 10.0
#: a swapped stretch is at most this long (it bounds the work on long recordings)
UNTANGLE_MAX_SECONDS = 60.0
#: a tracklet the network named on an unsure vote (below NETWORK_MIN_PROBABILITY: the
#: likeliest of an identity it is unsure of everywhere, or a vote for a free identity) is
#: swapped like an inferred piece, its vote counted at this weight (ten images or more: the
#: network's word, not a part's; INFERRED_APPEARANCE_WEIGHT for the parts). Crowd of 20 seed 2,
#: frames 180-209: a 22-frame tracklet named on a vote of 0.70 carried two animals' identities
#: swapped; replays 98.930 -> 99.035 %, every other case unchanged. The same from 0.6 to 1.6;
#: at 2 nothing is swapped there. At the inferred pieces' weight, two fish the free vote named
#: right as a video starts were swapped back by where the tracklets after a tangle begin
UNSURE_VOTE_WEIGHT = 1.0


def _room(result: TrackingResult, min_frames: int) -> np.ndarray:
    """Per tracklet, how many animals beside the one it is named for it can hide: from its mean
    area in single animals (the median tracked blob) :data:`HOST_AREA` on, one per animal's
    area; 0 for tracklets shorter than ``min_frames``."""
    t = result.tracklets
    frames, slots = np.nonzero(result.tracklet_of >= 0)
    tid = result.tracklet_of[frames, slots]
    area = result.detections["area"][result.assignment[frames, slots]].astype(float)
    single = max(float(np.median(area)), 1.0) if len(area) else 1.0
    n = len(t)
    mean = np.bincount(tid, area, minlength=n) / np.maximum(np.bincount(tid, minlength=n), 1)
    room = np.maximum(np.floor(mean / single - HOST_AREA).astype(np.int64) + 1, 0)
    room[t.length < min_frames] = 0
    return room


def _untangle(result: TrackingResult, identity: np.ndarray, source: np.ndarray,
              probability: np.ndarray, vectors: np.ndarray, trust: np.ndarray, taken: np.ndarray,
              n_identities: int, body: float, max_frames: int, rounds: int = 10) -> int:
    """Swap the inferred pieces of identities i and j over frames s..e that begin or end where
    one of them jumps (:data:`UNTANGLE_JUMP`), where that makes their two paths (from the
    sighting before s to the one after e, through their pieces) no longer and, with the
    pieces' votes, at least :data:`UNTANGLE_MIN_GAIN` body lengths shorter. Pieces named any
    other way (the network's sure votes, a person, elimination) are never swapped, nor is a
    stretch that cuts one; a tracklet the network named on an unsure vote is
    (:data:`UNSURE_VOTE_WEIGHT`), and is then inferred. The best swaps that do not overlap are
    made, and the search repeats (at most ``rounds`` times) since each swap changes the paths
    around it. Returns the number made.

    A chain placed wrongly at the start of a long resting clump carried an animal's identity
    onto its neighbour for the rest of the clump: the jump where it went over is plain to see
    once all is placed, not while the chains are placed one at a time."""
    t = result.tracklets
    n_frames = len(result.assignment)
    det_x, det_y = result.detections["x"], result.detections["y"]
    frames = np.arange(n_frames)[:, None]
    votes = _vote_costs(vectors, trust)
    unsure = (source == "network") & (probability < NETWORK_MIN_PROBABILITY)
    votes[unsure] *= UNSURE_VOTE_WEIGHT / INFERRED_APPEARANCE_WEIGHT
    swaps = 0
    for _ in range(rounds):
        at = np.full((n_frames, n_identities), -1, np.int64)  # the piece of each identity
        for k in np.flatnonzero(identity >= 0):
            at[int(t.start[k]): int(t.end[k]) + 1, int(identity[k])] = k
        rows = np.where(at >= 0, result.assignment[frames, t.individual[np.maximum(at, 0)]], -1)
        row = np.maximum(rows, 0)
        xy = np.where((rows >= 0)[..., None], np.stack([det_x[row], det_y[row]], -1), np.nan)
        free = np.ones((n_frames, n_identities), bool)  # no piece, an inferred or unsure one
        free[at >= 0] = (source[at[at >= 0]] == "inferred") | unsure[at[at >= 0]]
        starts = (at < 0) | (t.start[np.maximum(at, 0)] == frames)
        ends = (at < 0) | (t.end[np.maximum(at, 0)] == frames)
        candidates = []
        for forward in (True, False):  # stretches that begin at a jump, and that end at one
            found = _swap_candidates(at if forward else at[::-1], xy if forward else xy[::-1],
                                     free if forward else free[::-1],
                                     starts if forward else ends[::-1],
                                     ends if forward else starts[::-1], votes, body, max_frames)
            for gain, i, j, a, b in found:
                candidates.append((gain, i, j, a, b) if forward
                                  else (gain, i, j, n_frames - 1 - b, n_frames - 1 - a))
        done = np.zeros((n_frames, n_identities), bool)
        changed = False
        for gain, i, j, a, b in sorted(candidates, reverse=True):
            if done[a: b + 1, [i, j]].any():
                continue
            done[a: b + 1, [i, j]] = True
            mine = {int(k) for k in at[a: b + 1, i] if k >= 0}
            theirs = {int(k) for k in at[a: b + 1, j] if k >= 0}
            for ks, new in ((mine, j), (theirs, i)):
                for k in ks:
                    identity[k], source[k] = new, "inferred"
                    probability[k] = 0.0 if np.isnan(vectors[k]).any() else float(vectors[k][new])
            taken[a: b + 1, [i, j]] = taken[a: b + 1, [j, i]]
            swaps += 1
            changed = True
        if not changed:
            break
    return swaps


def _swap_candidates(at: np.ndarray, xy: np.ndarray, free: np.ndarray, starts: np.ndarray,
                     ends: np.ndarray, votes: np.ndarray, body: float, max_frames: int
                     ) -> list[tuple[float, int, int, int, int]]:
    """(gain, i, j, s, e) of :func:`_untangle`: swaps of identities i and j over frames s..e that
    begin where i's path jumps, in the order of the arrays given (frames x identities: the piece,
    its place, whether it may be swapped, whether it starts / ends in that frame; ``votes``:
    :func:`_vote_costs`)."""
    n_frames, n_identities = at.shape
    seen = at >= 0
    index = np.arange(n_frames)[:, None]
    seen_before = np.maximum.accumulate(np.where(seen, index, -1), axis=0)  # at or before
    seen_after = np.minimum.accumulate(np.where(seen, index, n_frames)[::-1], axis=0)[::-1]

    def sighting(i: int, f: int, step: int) -> tuple[int, np.ndarray] | None:
        if not 0 <= f < n_frames:
            return None
        g = int(seen_before[f, i] if step < 0 else seen_after[f, i])
        return (g, xy[g, i]) if 0 <= g < n_frames else None

    def d(p, q) -> float:
        return 0.0 if p is None or q is None else float(np.hypot(*(p[1] - q[1]))) / body

    def path(prev, first, last, nxt) -> float:
        return d(prev, nxt) if first is None else d(prev, first) + d(last, nxt)

    out = []
    for i in range(n_identities):
        f = np.flatnonzero(seen[:, i])
        if len(f) < 2:
            continue
        jump = np.hypot(*(xy[f[1:], i] - xy[f[:-1], i]).T) / body
        for s in f[1:][jump >= UNTANGLE_JUMP]:
            s = int(s)
            if not (free[s, i] and starts[s, i]):
                continue
            prev_i = sighting(i, s - 1, -1)
            for j in range(n_identities):
                if j == i or not (free[s, j] and starts[s, j]):
                    continue
                prev_j = sighting(j, s - 1, -1)
                if prev_j is not None and d(prev_i, prev_j) > UNTANGLE_NEAR:
                    continue
                app, best = 0.0, (UNTANGLE_MIN_GAIN, -1)
                first_i = first_j = last_i = last_j = None
                for e in range(s, min(n_frames, s + max_frames)):
                    if not (free[e, i] and free[e, j]):
                        break
                    for who, other in ((i, j), (j, i)):
                        k = at[e, who]
                        if k >= 0 and (e == s or at[e - 1, who] != k):  # each piece once
                            app += votes[k, who] - votes[k, other]
                    if seen[e, i]:
                        last_i = (e, xy[e, i])
                        first_i = first_i or last_i
                    if seen[e, j]:
                        last_j = (e, xy[e, j])
                        first_j = first_j or last_j
                    if not (ends[e, i] and ends[e, j]):
                        continue
                    next_i, next_j = sighting(i, e + 1, 1), sighting(j, e + 1, 1)
                    as_is = (path(prev_i, first_i, last_i, next_i)
                             + path(prev_j, first_j, last_j, next_j))
                    swapped = (path(prev_i, first_j, last_j, next_i)
                               + path(prev_j, first_i, last_i, next_j))
                    shorter = as_is - swapped
                    gain = shorter + app
                    if gain > best[0] and shorter >= 0:
                        best = (gain, e)
                if best[1] >= 0:
                    out.append((best[0], i, j, s, best[1]))
    return out
