"""Visual corrections of identities, undoable, recorded as TRex's manual_matches / manual_splits.

A biologist checks the tracklets the network was least sure of and fixes what is wrong:

* :meth:`Corrections.reassign` gives a tracklet another identity; the tracklet that had that
  identity in the overlapping frames gets the old one (a swap, as when two fish were mixed up
  at a crossing);
* :meth:`Corrections.split` cuts a tracklet at a frame (the rest becomes a new tracklet, to be
  assigned), for a switch the tracking missed;
* :meth:`Corrections.remove` says a tracklet is not an animal (a reflection, debris): it loses
  its identity and is left out of exports.

Every edit is one undo step (:meth:`undo` / :meth:`redo`), marks the tracklets it touched as
*edited*, and is written down the way TRex stores corrections: ``manual_matches``
``{frame: {identity: blob id}}`` and ``manual_splits`` ``{frame: [blob id]}``; a retrack or a
new identification run with those settings applies them first (see :func:`apply_manual`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .errors import NapariTrexError
from .identification.assignment import TrackletIdentities
from .settings import Settings
from .tracking import TrackingResult
from .tracklets import MANUAL_SPLIT, Tracklets

REMOVED = "removed"  # source of a tracklet the user said is not an animal


def slot_identities(result: TrackingResult) -> TrackletIdentities:
    """Identities before identification: each tracklet is its tracking slot (not trusted)."""
    t = result.tracklets
    n = result.assignment.shape[1]
    return TrackletIdentities(t.individual.astype(int).copy(), np.zeros(len(t)), np.zeros(len(t), int),
                              np.full(len(t), "", dtype=object), np.full((len(t), n), np.nan))


def split_tracklet(result: TrackingResult, tracklet: int, frame: int, reason: int = MANUAL_SPLIT
                   ) -> tuple[TrackingResult, int]:
    """``result`` with ``tracklet`` cut before ``frame``; returns it and the new tracklet's id
    (which holds ``frame`` .. the old end)."""
    t = result.tracklets
    if not t.start[tracklet] < frame <= t.end[tracklet]:
        raise NapariTrexError(f"tracklet {tracklet} spans frames {t.start[tracklet]}–{t.end[tracklet]}: "
                              f"it can only be split after its first frame, not at {frame}")
    new = len(t)
    slot = int(t.individual[tracklet])
    tracklets = Tracklets(np.append(t.id, new), np.append(t.individual, slot),
                          np.append(t.start, frame), np.append(t.end, t.end[tracklet]),
                          np.append(t.end_reason, t.end_reason[tracklet]))
    tracklets.end[tracklet] = frame - 1
    tracklets.end_reason[tracklet] = reason
    tracklet_of = result.tracklet_of.copy()
    column = tracklet_of[frame:, slot]
    column[column == tracklet] = new
    return replace(result, tracklets=tracklets, tracklet_of=tracklet_of), new


def _grow(identities: TrackletIdentities, n_new: int) -> TrackletIdentities:
    """Room for ``n_new`` more tracklets (unidentified)."""
    n = identities.mean_vectors.shape[1]
    return TrackletIdentities(
        np.append(identities.identity, np.full(n_new, -1)),
        np.append(identities.probability, np.zeros(n_new)),
        np.append(identities.n_samples, np.zeros(n_new, int)),
        np.append(identities.source, np.full(n_new, "", dtype=object)),
        np.vstack([identities.mean_vectors, np.full((n_new, n), np.nan)]))


@dataclass
class _State:
    result: TrackingResult
    identities: TrackletIdentities
    manual_matches: dict[int, dict[int, int]]
    manual_splits: dict[int, list[int]]
    not_animals: dict[int, list[int]]
    edited: np.ndarray


@dataclass
class Corrections:
    """The user's edits on one run: current tracklets, identities, and the undo history."""

    result: TrackingResult
    identities: TrackletIdentities
    manual_matches: dict[int, dict[int, int]] = field(default_factory=dict)
    manual_splits: dict[int, list[int]] = field(default_factory=dict)
    not_animals: dict[int, list[int]] = field(default_factory=dict)  # {frame: [blob id]}
    edited: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    history_limit: int = 100
    _undo: list[_State] = field(default_factory=list, repr=False)
    _redo: list[_State] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if len(self.edited) != len(self.result.tracklets):
            self.edited = np.zeros(len(self.result.tracklets), bool)

    @classmethod
    def start(cls, result: TrackingResult, identities: TrackletIdentities | None = None,
              settings: Settings | None = None, record: CorrectionsRecord | None = None
              ) -> Corrections:
        """Corrections on a run (before identification the tracking slots are the identities),
        continuing ``record`` (or the ``manual_matches`` / ``manual_splits`` in ``settings``)."""
        record = record if record is not None else CorrectionsRecord.from_settings(settings or Settings())
        record = record.copy()
        return cls(result, copy.deepcopy(identities) if identities is not None else slot_identities(result),
                   record.manual_matches, record.manual_splits, record.not_animals)

    @property
    def record(self) -> CorrectionsRecord:
        """Every decision the user made, in terms that survive a retrack (blob ids per frame)."""
        return CorrectionsRecord(self.manual_matches, self.manual_splits, self.not_animals).copy()

    @property
    def n_individuals(self) -> int:
        return self.result.assignment.shape[1]

    # -- helpers -----------------------------------------------------------------------------------
    def _check(self, tracklet: int) -> None:
        if not 0 <= tracklet < len(self.result.tracklets):
            raise NapariTrexError(f"there is no tracklet {tracklet}")

    def blob_at(self, tracklet: int, frame: int) -> int | None:
        """The blob id of ``tracklet`` in ``frame`` (None when it is not there)."""
        slot = int(self.result.tracklets.individual[tracklet])
        if not 0 <= frame < len(self.result.assignment) or self.result.tracklet_of[frame, slot] != tracklet:
            return None
        row = self.result.assignment[frame, slot]
        return None if row < 0 else int(self.result.detections["blob_id"][row])

    def tracklet_at(self, frame: int, x: float, y: float, max_distance: float = np.inf) -> int | None:
        """The tracklet whose animal is nearest to (x, y) in ``frame`` (a click)."""
        rows = self.result.assignment[frame]
        seen = np.flatnonzero((rows >= 0) & (self.result.tracklet_of[frame] >= 0))
        if not len(seen):
            return None
        det = self.result.detections
        d = np.hypot(det["x"][rows[seen]] - x, det["y"][rows[seen]] - y)
        k = int(np.argmin(d))
        return int(self.result.tracklet_of[frame, seen[k]]) if d[k] <= max_distance else None

    def _snapshot(self) -> None:
        self._undo.append(_State(self.result, copy.deepcopy(self.identities),
                                 copy.deepcopy(self.manual_matches), copy.deepcopy(self.manual_splits),
                                 copy.deepcopy(self.not_animals), self.edited.copy()))
        del self._undo[:-self.history_limit]
        self._redo.clear()

    def _restore(self, state: _State) -> None:
        self.result, self.identities = state.result, state.identities
        self.manual_matches, self.manual_splits = state.manual_matches, state.manual_splits
        self.not_animals, self.edited = state.not_animals, state.edited

    def _state(self) -> _State:
        return _State(self.result, self.identities, self.manual_matches, self.manual_splits,
                      self.not_animals, self.edited)

    def _match(self, tracklet: int, identity: int, frames: list[int]) -> None:
        """Record ``identity`` for ``tracklet`` at the first of ``frames`` where it has a blob."""
        for frame in frames:
            blob = self.blob_at(tracklet, frame)
            if blob is not None:
                self.manual_matches.setdefault(int(frame), {})[int(identity)] = blob
                return

    # -- edits -------------------------------------------------------------------------------------
    def reassign(self, tracklet: int, identity: int, frame: int) -> list[int]:
        """Give ``tracklet`` ``identity``; tracklets holding that identity in overlapping frames
        get ``tracklet``'s old identity (a swap). Returns every tracklet changed."""
        self._check(tracklet)
        if not 0 <= identity < self.n_individuals:
            raise NapariTrexError(f"identity {identity} does not exist: there are "
                                  f"{self.n_individuals} animals (0–{self.n_individuals - 1})")
        t, ids = self.result.tracklets, self.identities
        old = int(ids.identity[tracklet])
        if old == identity:
            return []
        self._snapshot()
        a, b = int(t.start[tracklet]), int(t.end[tracklet])
        others = np.flatnonzero((ids.identity == identity) & (t.start <= b) & (t.end >= a))
        changed = [tracklet]
        here = [frame] + list(range(a, b + 1))
        for o in others:
            o = int(o)
            ids.identity[o] = old
            ids.source[o] = "manual" if old >= 0 else ""
            ids.probability[o] = 1.0 if old >= 0 else 0.0
            self.edited[o] = True
            changed.append(o)
            if old >= 0:
                overlap = range(max(a, int(t.start[o])), min(b, int(t.end[o])) + 1)
                self._match(o, old, [frame, *overlap])
        ids.identity[tracklet], ids.source[tracklet], ids.probability[tracklet] = identity, "manual", 1.0
        self.edited[tracklet] = True
        self._match(tracklet, identity, here)
        return changed

    def split(self, tracklet: int, frame: int) -> int:
        """Cut ``tracklet`` before ``frame``; the rest is a new, unidentified tracklet (returned)."""
        self._check(tracklet)
        blob = self.blob_at(tracklet, frame)
        result, new = split_tracklet(self.result, tracklet, frame)  # raises before any change
        self._snapshot()
        self.result = result
        self.identities = _grow(self.identities, 1)
        self.edited = np.append(self.edited, True)
        self.edited[tracklet] = True
        if blob is not None:
            self.manual_splits.setdefault(int(frame), [])
            if blob not in self.manual_splits[int(frame)]:
                self.manual_splits[int(frame)].append(blob)
        return new

    def remove(self, tracklet: int) -> None:
        """``tracklet`` is not an animal: no identity, left out of exports."""
        self._check(tracklet)
        self._snapshot()
        ids = self.identities
        ids.identity[tracklet], ids.source[tracklet], ids.probability[tracklet] = -1, REMOVED, 0.0
        self.edited[tracklet] = True
        for frame, wanted in list(self.manual_matches.items()):  # forget matches onto it
            for ident, blob in list(wanted.items()):
                if self.blob_at(tracklet, frame) == blob:
                    del wanted[ident]
            if not wanted:
                del self.manual_matches[frame]
        t = self.result.tracklets
        for frame in range(int(t.start[tracklet]), int(t.end[tracklet]) + 1):
            blob = self.blob_at(tracklet, frame)  # one blob names the tracklet after a retrack
            if blob is not None:
                self.not_animals.setdefault(frame, []).append(blob)
                break

    # -- history -----------------------------------------------------------------------------------
    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo(self) -> bool:
        if not self._undo:
            return False
        self._redo.append(self._state())
        self._restore(self._undo.pop())
        return True

    def redo(self) -> bool:
        if not self._redo:
            return False
        self._undo.append(self._state())
        self._restore(self._redo.pop())
        return True

    # -- review --------------------------------------------------------------------------------------
    def review_queue(self, min_frames: int = 1) -> list[int]:
        """Tracklets to check, riskiest first: lowest identity confidence, longer ones first
        among equals; removed and already edited tracklets are left out."""
        ids, t = self.identities, self.result.tracklets
        keep = [k for k in range(len(t)) if ids.source[k] != REMOVED and not self.edited[k]
                and t.end[k] - t.start[k] + 1 >= min_frames]
        return sorted(keep, key=lambda k: (float(ids.probability[k]), -(t.end[k] - t.start[k])))

    def next_boundary(self, tracklet: int, frame: int, forward: bool = True) -> int | None:
        """The next (or previous) frame after ``frame`` where the animal of ``tracklet`` (its
        identity, or its tracking slot when it has none) starts or ends a tracklet."""
        t, ids = self.result.tracklets, self.identities
        identity = int(ids.identity[tracklet])
        mine = np.flatnonzero(ids.identity == identity) if identity >= 0 else \
            np.flatnonzero(t.individual == t.individual[tracklet])
        frames = np.unique(np.concatenate([t.start[mine], t.end[mine]]))
        later = frames[frames > frame] if forward else frames[frames < frame][::-1]
        return int(later[0]) if len(later) else None

    def settings(self, base: Settings) -> Settings:
        """``base`` with these corrections as ``manual_matches`` / ``manual_splits``."""
        return base.updated(manual_matches=self.manual_matches, manual_splits=self.manual_splits)


@dataclass
class CorrectionsRecord:
    """All decisions a user made on a results folder, in terms that survive a retrack of the
    same video: blob ids per frame (TRex's ``manual_matches`` ``{frame: {identity: blob}}`` and
    ``manual_splits`` ``{frame: [blob]}``) and the tracklets marked "not an animal"
    (``{frame: [blob]}``, one blob of each). Saved as ``corrections.json`` in the results
    folder; every path (command line, batch, panels) loads it first and saves it back."""

    manual_matches: dict[int, dict[int, int]] = field(default_factory=dict)
    manual_splits: dict[int, list[int]] = field(default_factory=dict)
    not_animals: dict[int, list[int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return (sum(len(v) for v in self.manual_matches.values())
                + sum(len(v) for v in self.manual_splits.values())
                + sum(len(v) for v in self.not_animals.values()))

    def copy(self) -> CorrectionsRecord:
        return CorrectionsRecord(
            {int(f): {int(i): int(b) for i, b in m.items()} for f, m in self.manual_matches.items()},
            {int(f): [int(b) for b in v] for f, v in self.manual_splits.items()},
            {int(f): [int(b) for b in v] for f, v in self.not_animals.items()})

    @classmethod
    def from_settings(cls, settings: Settings) -> CorrectionsRecord:
        return cls(dict(settings.manual_matches), dict(settings.manual_splits)).copy()

    def merged(self, other: CorrectionsRecord) -> CorrectionsRecord:
        """This record with ``other``'s decisions added (``other`` wins where both name the
        same identity in the same frame)."""
        out = self.copy()
        for f, m in other.copy().manual_matches.items():
            out.manual_matches.setdefault(f, {}).update(m)
        for target, source in ((out.manual_splits, other.manual_splits),
                               (out.not_animals, other.not_animals)):
            for f, blobs in source.items():
                mine = target.setdefault(int(f), [])
                mine.extend(int(b) for b in blobs if int(b) not in mine)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"manual_matches": {str(f): {str(i): b for i, b in m.items()}
                                   for f, m in self.copy().manual_matches.items()},
                "manual_splits": {str(f): v for f, v in self.copy().manual_splits.items()},
                "not_animals": {str(f): v for f, v in self.copy().not_animals.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CorrectionsRecord:
        try:
            return cls({int(f): {int(i): int(b) for i, b in m.items()}
                        for f, m in data.get("manual_matches", {}).items()},
                       {int(f): [int(b) for b in v] for f, v in data.get("manual_splits", {}).items()},
                       {int(f): [int(b) for b in v] for f, v in data.get("not_animals", {}).items()})
        except (AttributeError, TypeError, ValueError) as exc:
            raise NapariTrexError(f"the corrections record is damaged: {exc}") from None

    def apply(self, result: TrackingResult, identities: TrackletIdentities | None
              ) -> tuple[TrackingResult, TrackletIdentities, np.ndarray, dict[str, int]]:
        """Re-apply the decisions to a (new) tracking: splits first, then matches, then "not an
        animal". Returns the result, identities, which tracklets are edited, and how many
        decisions were applied and how many name a blob that is no longer there."""
        report = {"applied": 0, "not_found": 0}
        tracklets_before = len(result.tracklets)
        if identities is None or len(identities.identity) != tracklets_before:
            identities = slot_identities(result)  # before the splits: their new parts get none
        for frame, hit in _hits(lambda: result, self.manual_splits, report):
            if frame > result.tracklets.start[hit]:
                result, _ = split_tracklet(result, hit, frame)
        identities = _grow(identities, len(result.tracklets) - tracklets_before)
        split = np.zeros(len(result.tracklets), bool)
        split[tracklets_before:] = True
        list(_hits(lambda: result, {f: list(m.values()) for f, m in self.manual_matches.items()},
                   report))  # counted here, applied by apply_manual
        identities = apply_manual(result, identities, Settings().updated(
            manual_matches=self.manual_matches)) if self.manual_matches else copy.deepcopy(identities)
        for _, hit in _hits(lambda: result, self.not_animals, report):
            identities.identity[hit], identities.source[hit] = -1, REMOVED
            identities.probability[hit] = 0.0
        edited = split | np.isin(identities.source, ["manual", REMOVED])
        for _, hit in _hits(lambda: result, self.manual_splits):  # both halves of a split
            edited[hit] = True
        return result, identities, edited, report


def _hits(current: Callable[[], TrackingResult], blobs_by_frame: dict[int, list[int]],
          report: dict[str, int] | None = None) -> Iterator[tuple[int, int]]:
    """``(frame, tracklet)`` for every blob named in ``blobs_by_frame`` that the tracking
    (``current()``: it may change between hits) holds; ``report`` counts found and not found."""
    for frame, blobs in sorted(blobs_by_frame.items()):
        for blob in blobs:
            hit = _tracklet_with_blob(current(), frame, blob)
            if report is not None:
                report["applied" if hit is not None else "not_found"] += 1
            if hit is not None:
                yield frame, hit


def _tracklet_with_blob(result: TrackingResult, frame: int, blob: int) -> int | None:
    """The tracklet that holds blob id ``blob`` in ``frame`` (None when none does)."""
    if not 0 <= frame < len(result.assignment):
        return None
    rows = result.assignment[frame]
    for slot, row in enumerate(rows):
        if row >= 0 and int(result.detections["blob_id"][row]) == int(blob):
            tid = int(result.tracklet_of[frame, slot])
            return tid if tid >= 0 else None
    return None


def apply_manual(result: TrackingResult, identities: TrackletIdentities | None,
                 settings: Settings) -> TrackletIdentities:
    """After a retrack: ``settings.manual_matches`` decide first (each gives the tracklet
    holding that blob in that frame the identity, displacing overlapping claims); the other
    tracklets keep the identities they had (the tracking slot before identification)."""
    from .identification.assignment import assign_identities

    n = result.assignment.shape[1]
    manual = assign_identities(result, np.empty(0, int), np.empty((0, n)), n, 25.0,
                               dict(settings.manual_matches))
    base = identities if identities is not None and len(identities.identity) == len(result.tracklets) \
        else slot_identities(result)
    out = copy.deepcopy(base)
    t = result.tracklets
    for k in np.flatnonzero(manual.source == "manual"):
        ident = int(manual.identity[k])
        clash = np.flatnonzero((out.identity == ident) & (t.start <= t.end[k]) & (t.end >= t.start[k]))
        for c in clash:
            if c != k:
                out.identity[c], out.source[c] = int(out.identity[k]) if out.source[c] != "manual" else -1, ""
        out.identity[k], out.source[k], out.probability[k] = ident, "manual", 1.0
    return out


__all__ = ["Corrections", "CorrectionsRecord", "REMOVED", "apply_manual", "slot_identities",
           "split_tracklet"]
