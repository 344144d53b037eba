"""Visual identification, end to end, as a generator of progress events.

``identify_events(run, video, settings)`` yields dicts (``stage``, ``message`` and figures
such as ``uniqueness``, ``epoch``, ``accepted``) so a terminal or a napari
``thread_worker`` can show them, and returns an :class:`IdentificationResult`. It writes
nothing: saving happens only once everything succeeded, so a cancel (``should_stop``) or a
crash leaves the previous results untouched. On success, tracklets split because the
predicted identity changed inside them replace ``run.result`` (the only change to ``run``).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import Cancelled, NapariTrexError
from ..model import TrackingRun
from ..progress import progress_events
from ..results import max_speed_px
from ..settings import Settings
from ..tracklets import MIN_GLOBAL_SEGMENT_FRAMES, segment_coverage
from ..video import Video
from .assignment import (TrackletIdentities, assign_identities, hidden_positions, identity_coverage,
                         split_suspicious_tracklets)
from . import pairs
from .network import (IdentityNetwork, choose_device, configure_cpu_threads, describe_device, seeded,
                      load_weights, place, predict, predict_either_way)
from .samples import (Samples, automatic_params, check_holdout, class_cap, cut_samples, holdout_split,
                      images_within, regular_subsample)
from .training import (ACCEPT_SHARE_OF_BEST, TrainingConfig, UnitResult, holdout_report, holdout_text,
                       label_candidate, train_unit_events, uniqueness, whole_animal_uniqueness)

Event = dict[str, Any]
DISCRIMINATION_FRAMES = 333
PART_AREA = (0.7, 1.3)  # split parts shown to the network: this x the typical whole blob
PREDICT_PER_TRACKLET = 60  # images averaged per tracklet when applying (evenly spread)
PROBE_IMAGES = 100  # images per tracklet inside a segment to label it with the network
FINAL_STEP_EPOCHS_SHARE = 0.1  # the final step's epochs: this share of gpu_max_epochs (15 of 150)
FINAL_STEP_UNTIL = 0.995  # the final step runs only below this uniqueness (TRex: always)
PREDICT_LONG_TRACKLET = 1000  # ... and for tracklets of >= 2·fps frames (switch detection)


@dataclass
class IdentificationResult:
    identities: TrackletIdentities
    uniqueness: float
    model: IdentityNetwork
    device: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    training: Samples | None = None  # the labelled images trained on (for the npz)
    validation: Samples | None = None
    seconds: float = 0.0
    settings: Settings | None = None  # the settings the identification ran with
    #: TRex's figure, for comparing with it: every measured frame as it is, the frames trained on
    #: included (``uniqueness`` leaves those out: there it would reward memory), whole animals only
    uniqueness_all_frames: float = float("nan")
    #: the finished network on the hold-out: per identity, and the pairs it mixes up most
    #: (:func:`~.training.holdout_report`); no images when it was not trained here
    holdout: dict[str, Any] = field(default_factory=dict)
    #: where ``uniqueness`` is on whole animals (TRex's rule): the same frames with the parts of
    #: animals split at contacts counted too, the figure training is held to (nan where too few
    #: frames show every animal whole and ``uniqueness`` counts the parts already)
    uniqueness_with_parts: float = float("nan")


def _eligible(run: TrackingRun, parts: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(frame, slot) pairs with a whole (not split) blob inside a tracklet, or a part that
    continues a tracklet (the tracker trusted it as the whole animal: animals resting side by
    side), not the one-frame tracklets of doubtful parts.

    ``parts``: only those one-frame parts instead, and only the ones the size of one animal
    (:data:`PART_AREA` x the median whole blob: a clean split, not a head and a tail)."""
    r = run.result
    frames, slots = np.nonzero((r.assignment >= 0) & (r.tracklet_of >= 0))
    rows = r.assignment[frames, slots]
    length = r.tracklets.length[r.tracklet_of[frames, slots]]
    split = r.detections["split"][rows].astype(bool)
    keep = ~split | (length >= 2)
    if parts:
        area = r.detections["area"][rows]
        typical = float(np.median(area[~split])) if (~split).any() else 0.0
        keep = ~keep & (area >= PART_AREA[0] * typical) & (area <= PART_AREA[1] * typical)
    return frames[keep], slots[keep]


class _Requests:
    """Builds crop requests (frame, slot, tracklet, x, y, heading, label) from the run."""

    def __init__(self, run: TrackingRun) -> None:
        from ..results import heading_angles

        self.run = run
        self.heading, self.decided = heading_angles(run.result, with_decided=True)
        self.frames, self.slots = _eligible(run)
        self.tracklet = run.result.tracklet_of[self.frames, self.slots]

    def parts(self) -> _Requests:
        """Requests for the clean one-frame parts at contacts instead (see :func:`_eligible`)."""
        other = copy.copy(self)
        other.frames, other.slots = _eligible(self.run, parts=True)
        other.tracklet = self.run.result.tracklet_of[other.frames, other.slots]
        return other

    def rows(self, index: np.ndarray, labels: np.ndarray | int = -1) -> list[tuple]:
        r = self.run.result
        f, s = self.frames[index], self.slots[index]
        det_rows = r.assignment[f, s]
        x, y = r.detections["x"][det_rows], r.detections["y"][det_rows]
        lab = np.broadcast_to(np.asarray(labels), f.shape)
        return [(int(a), int(b), int(c), float(d), float(e), float(h), int(g), bool(k),
                 self._bodies(int(a), int(row)))
                for a, b, c, d, e, h, g, k, row in zip(f, s, self.tracklet[index], x, y,
                                                       self.heading[det_rows], lab,
                                                       ~self.decided[det_rows], det_rows)]

    def _bodies(self, frame: int, row: int) -> np.ndarray | None:
        """For a split part: (x, y, angle, major, minor) of it and of the other parts of its
        frame close enough to be of the same clump (centres within 1.2 x their half-lengths
        together), for :func:`~.samples.crop_sample`; None for a whole blob."""
        det = self.run.result.detections
        if not det["split"][row]:
            return None
        here = det.rows(frame)
        rows = np.arange(here.start, here.stop)
        rows = rows[det["split"][rows].astype(bool) & (rows != row)]
        reach = 1.2 * (det["major"][row] + det["major"][rows]) / 2
        rows = rows[np.hypot(det["x"][rows] - det["x"][row], det["y"][rows] - det["y"][row]) <= reach]
        return np.column_stack([det[c][np.concatenate([[row], rows])]
                                for c in ("x", "y", "angle", "major", "minor")]).astype(float)

    def body_length(self) -> float:
        """The animals' length in px: the 90th percentile of the major axes of the whole blobs
        in tracklets (posture makes most frames shorter than the animal)."""
        return self._axis("major", 90)

    def body_width(self) -> float:
        """The animals' width in px across their postures: the 95th percentile of the minor
        axes (a bent body is wider)."""
        return self._axis("minor", 95)

    def _axis(self, column: str, percentile: float) -> float:
        rows = self.run.result.assignment[self.frames, self.slots]
        values = self.run.result.detections[column][rows]
        return float(np.percentile(values, percentile)) if len(values) else 0.0

    def of_tracklets(self, tracklets: list[int]) -> np.ndarray:
        return np.flatnonzero(np.isin(self.tracklet, tracklets))


def identify_events(
    run: TrackingRun,
    video: Video,
    settings: Settings | None = None,
    *,
    weights: str | IdentityNetwork | None = None,
    apply_only: bool = False,
    should_stop: Callable[[], bool] | None = None,
    start_from: str = "automatic",
) -> Generator[Event, None, IdentificationResult]:
    """Train (or load) the identification network and assign an identity to every tracklet.

    ``weights``: a file saved by an earlier run, or a network in memory (the GUI's
    "Continue" / "Apply only"); it is copied, never trained in place. ``start_from``:
    ``"automatic"`` starts from the best global segment, or from tracklet pairs when there is
    none or the global segments hold little of the video (:func:`choose_start`); ``"pairs"``
    from tracklet pairs always (to compare the two).
    """
    if start_from not in ("automatic", "pairs"):
        raise ValueError(f"start_from must be 'automatic' or 'pairs', not {start_from!r}")
    settings = settings or run.settings
    started = time.perf_counter()
    n = run.n_individuals
    if not settings.recognition_enable:
        raise NapariTrexError("visual identification is switched off (recognition_enable = false)")
    if n < 2:
        raise NapariTrexError("visual identification needs at least 2 animals "
                              "(track_max_individuals)")
    if apply_only and weights is None:
        raise NapariTrexError("apply only needs weights from an earlier training (--weights FILE)")
    configure_cpu_threads()
    device = choose_device(settings.gpu_torch_device)
    device_name = describe_device(device)
    yield {"stage": "device", "message": f"training on {device_name}", "device": device_name}
    requests = _Requests(run)
    if not len(requests.frames):
        raise NapariTrexError("no animal was tracked: nothing to identify")
    loaded: IdentityNetwork | None = None
    if weights is not None:
        if isinstance(weights, IdentityNetwork):
            loaded = place(copy.deepcopy(weights), device)
        else:
            loaded, _ = load_weights(weights, device)
    size, scale = tuple(settings.recognition_image_size), settings.recognition_image_scale
    if loaded is not None and size == (0, 0):  # automatic: the loaded network's crops
        size, scale = loaded.size, loaded.image_scale or scale
    normalization, aligned = settings.recognition_normalization, ""
    if loaded is not None and loaded.normalization and loaded.normalization != normalization:
        # a network knows the crops it was trained on: others would look like other animals
        aligned = (f"; aligned by {loaded.normalization} as the loaded network's were "
                   f"(recognition_normalization is {normalization})")
        normalization = loaded.normalization
    if loaded is not None and not loaded.even_light:
        aligned += "; the light not evened out, as in the loaded network's crops (an older file)"
    if loaded is not None and loaded.layout != settings.visual_identification_version:
        aligned += (f"; the loaded network's layout is {loaded.layout} "
                    f"(visual_identification_version is {settings.visual_identification_version})")
    params, crops = automatic_params(size, scale, requests.body_length(), normalization,
                                     max(settings.threshold, settings.track_threshold),
                                     requests.body_width(),
                                     even_light=loaded.even_light if loaded is not None else True)
    crops += aligned
    yield {"stage": "crops", "message": crops, "image_size": list(params.size),
           "image_scale": params.scale}

    cache = _KeptCrops(len(requests.frames), params.size, settings.gpu_max_sample_gb)

    def cut(index: np.ndarray, labels: np.ndarray | int = -1, why: str = "cutting images"
            ) -> Generator[Event, None, Samples]:
        """The crops of ``index`` (requests), each cut once: those cut for an earlier step are
        reused, the others cut now, passing on progress (decoding is most of the time before
        training)."""
        index = np.asarray(index, np.int64)
        images = np.empty((len(index), params.size[1], params.size[0]), np.uint8)
        have = cache.has(index)
        new = np.unique(index[~have])
        if len(new):
            fresh = yield from progress_events(
                cut_samples, video, run.background, requests.rows(new), params,
                should_stop, stage="images", message=why)
            crops = np.empty_like(fresh.images)  # cut_samples returns them in frame order
            crops[np.argsort(requests.frames[new], kind="stable")] = fresh.images
            images[~have] = crops[np.searchsorted(new, index[~have])]
            cache.add(new, crops)
        images[have] = cache.get(index[have])
        labels = np.broadcast_to(np.asarray(labels, np.int64), index.shape).copy()
        return Samples(images, requests.frames[index], requests.slots[index],
                       requests.tracklet[index], labels)

    # discrimination images: every animal in ~333 evenly spaced frames (for uniqueness)
    n_frames = len(run.result.assignment)
    step = max(1, n_frames // DISCRIMINATION_FRAMES)
    disc_index = np.flatnonzero(requests.frames % step == 0)
    discrimination = yield from cut(disc_index, why="cutting images to measure uniqueness")
    disc = (discrimination.images, discrimination.frame)
    # which of them show a whole animal, not a part of a blob split at a contact: the final
    # uniqueness is TRex's, on whole animals; training is held to the stricter figure with parts
    det_rows = run.result.assignment[discrimination.frame, discrimination.slot]
    disc_whole = ~run.result.detections["split"][det_rows].astype(bool)
    target = settings.accepted_uniqueness(n)
    config = TrainingConfig(n_identities=n, size=params.size, learning_rate=settings.gpu_learning_rate,
                            max_epochs=settings.gpu_max_epochs, accepted_uniqueness=target,
                            min_iterations=settings.gpu_min_iterations, seed=settings.seed)
    steps: list[dict[str, Any]] = []
    trained_ranges: list[tuple[int, int]] = []  # frames trained on: uniqueness is measured elsewhere
    train_set: Samples | None = None
    val_set: Samples | None = None

    if loaded is not None:
        model = loaded
        if model.n_identities != n or model.size != params.size:
            source = f"the weights in {weights}" if isinstance(weights, str) else "the earlier network"
            raise NapariTrexError(f"{source} is for {model.n_identities} animals and "
                                  f"{model.size[0]}x{model.size[1]} px images, not {n} and "
                                  f"{params.size[0]}x{params.size[1]}")
        best_u = uniqueness(predict(model, disc[0], device), disc[1], n)
        yield {"stage": "loaded", "message": f"loaded weights, uniqueness {best_u:.3f}",
               "uniqueness": best_u}
    else:
        with seeded(settings.seed, device):  # the same seed, the same initial weights
            model = place(IdentityNetwork(n, params.size, image_scale=params.scale,
                                          normalization=params.normalization,
                                          layout=settings.visual_identification_version,
                                          even_light=params.even_light), device)
        best_u = 0.0

    if not apply_only:
        segments = run.segments
        from_pairs, why_path = choose_start(run, start_from, continuing=loaded is not None)
        if not from_pairs:
            yield {"stage": "path", "path": "global segment", "message": why_path}
        if from_pairs and loaded is not None:
            raise NapariTrexError("no global segment (all animals in tracklets at once) to check "
                                  "the loaded network on: use Apply only, or train from scratch")
        order = np.argsort(segments.rank)
        tid_matrix = run.result.tracklet_of
        t_start, t_end = run.result.tracklets.start, run.result.tracklets.end
        used: set[int] = set()
        trained_label: dict[int, int] = {}  # tracklet -> the identity it was trained as
        cap = None

        def segment_tracklets(k: int) -> list[int]:
            return [int(t) for t in tid_matrix[int(segments.start[k])]]

        def labelled(tracklets: list[int], labels: list[int]
                     ) -> Generator[Event, None, tuple[Samples, Samples]]:
            nonlocal cap
            counts = np.array([len(requests.of_tracklets([t])) for t in tracklets])
            cap = class_cap(counts, params.size, settings.gpu_max_sample_gb)
            chosen = [regular_subsample(requests.of_tracklets([t]), cap) for t in tracklets]
            index = np.concatenate(chosen)
            label_of = np.concatenate([np.full(len(c), label) for c, label in zip(chosen, labels)])
            samples = yield from cut(index, label_of, why="cutting training images")
            for t, label in zip(tracklets, labels):
                trained_label[t] = int(label)
            # a fixed hold-out: blocks of frames, never next to a training image; each
            # tracklet is cut once, so an image never changes sides between steps
            is_train, is_val = holdout_split(samples.frame, samples.tracklet, run.fps)
            train, val = samples.subset(np.flatnonzero(is_train)), samples.subset(np.flatnonzero(is_val))
            check_holdout(train, val, min_gap=2)
            return train, val

        def probe_segment(k: int, tracklets: list[int]) -> Generator[Event, None, Samples]:
            """A few images of each tracklet inside segment ``k``: enough to label it."""
            a, b = int(segments.start[k]), int(segments.end[k])
            index = []
            for t in tracklets:
                mine = requests.of_tracklets([t])
                inside = mine[(requests.frames[mine] >= a) & (requests.frames[mine] <= b)]
                index.append(regular_subsample(inside, PROBE_IMAGES))
            return (yield from cut(np.concatenate(index), why=f"cutting images of segment {a}-{b}"))

        def unit_events(label: str, *args: Any, **kwargs: Any) -> Generator[Event, None, UnitResult]:
            """Train one unit, passing every epoch on as an event."""
            events = train_unit_events(*args, should_stop=should_stop, **kwargs)
            while True:
                try:
                    record = next(events)
                except StopIteration as done:
                    return done.value
                cap_epochs = kwargs.get("max_epochs") or config.max_epochs
                yield {"stage": "epoch", "unit": label, **record,
                       **({"done": record["epoch"], "total": cap_epochs} if cap_epochs else {}),
                       "message": f"  {label} epoch {record['epoch']}: uniqueness "
                       f"{record['uniqueness']:.3f}, loss {record['loss']:.3f}"}

        # -- the initial unit on the best global segment, or on tracklets named from pairs -----
        if from_pairs:
            named = yield from _names_from_pairs(run, requests, cut, n, params.size, settings, device,
                                                   should_stop, why_path)
            tracklets = list(named)
            train_set, val_set = yield from labelled(tracklets, [named[t] for t in tracklets])
            label = f"initial unit on {len(tracklets)} tracklets named from pairs"
            first_range = [int(requests.frames.min()), int(requests.frames.max())]
        else:
            first = int(order[0])
            tracklets = segment_tracklets(first)
            first_range = [int(segments.start[first]), int(segments.end[first])]
            label = f"initial unit on frames {first_range[0]}-{first_range[1]}"
            if weights is None:
                train_set, val_set = yield from labelled(tracklets, list(range(n)))
            else:  # continue: label the best segment with the loaded network
                probe = yield from probe_segment(first, tracklets)
                mapping, why = label_candidate(predict(model, probe.images, device), probe.tracklet, n,
                                               settings.recognition_segment_add_factor)
                if mapping is None:  # never fall back to the slot numbers: they are not identities
                    raise NapariTrexError(f"the loaded network cannot tell the animals of the best "
                                          f"segment apart ({why}): press Start to train from scratch, "
                                          "or load weights of these animals")
                labels = [mapping[t] for t in tracklets]
                train_set, val_set = yield from labelled(tracklets, labels)
        used.update(tracklets)
        yield {"stage": "training", "message": f"{label} ({len(train_set)} images)", "step": 0}
        if not from_pairs:  # tracklets named from pairs lie everywhere: uniqueness is measured on all
            trained_ranges.append((first_range[0], first_range[1]))
        unit = yield from unit_events("initial unit", model, train_set.images, train_set.label,
                                      val_set.images, val_set.label,
                                      untrained(disc, trained_ranges), config, device,
                                      previous_best=best_u)
        best_u = max(best_u, unit.uniqueness)
        best_model = copy.deepcopy(model)  # the network the uniqueness of new units is held against
        steps.append({"step": 0, "range": first_range, "start": "pairs" if from_pairs else "global segment",
                      "status": "accepted", "uniqueness": unit.uniqueness, "epochs": unit.epochs,
                      "reason": unit.stopped_because})
        yield {"stage": "step", "step": 0, "uniqueness": unit.uniqueness, "accepted": True,
               "epochs": unit.epochs, "message": f"step 0: uniqueness {unit.uniqueness:.3f} "
               f"({unit.epochs} epochs, {unit.stopped_because})"}

        # -- accumulation ----------------------------------------------------------------------
        if settings.gpu_enable_accumulation and not from_pairs:
            pending = [int(k) for k in order[1:]]
            tried: set[int] = set()
            retry: list[int] = []  # refused by the network of the day: asked again by a better one
            disagreed: set[int] = set()  # set aside once because another segment named them otherwise
            at_once = len(pending)  # every segment that passes, in one unit (TRex: one per unit)

            def rejected(rng: list[int], why: str) -> Event:
                steps.append({"step": len(steps), "range": rng, "status": "rejected", "reason": why})
                return {"stage": "step", "step": len(steps) - 1, "accepted": False,
                        "message": f"segment {rng}: rejected ({why})"}

            while pending and best_u < target:
                # label up to `at_once` segments with the current network, train once on all
                # that pass; a batch that lowers the uniqueness is retried in halves, down to
                # one segment at a time (TRex's way)
                batch: list[tuple[int, list[int], dict[int, int]]] = []
                claimed: dict[int, int] = {}
                claimed_by: dict[int, int] = {}  # tracklet -> the segment of this batch naming it
                while pending and len(batch) < at_once:
                    if should_stop is not None and should_stop():
                        raise Cancelled("identification cancelled")
                    k = pending[0]
                    if k not in tried and len(tried) >= settings.gpu_accumulation_max_segments:
                        pending.clear()
                        break
                    pending.pop(0)
                    tracklets = segment_tracklets(k)
                    if not [t for t in tracklets if t not in used and t not in claimed]:
                        continue  # trained ones are not cut again
                    tried.add(k)
                    rng = [int(segments.start[k]), int(segments.end[k])]
                    probe = yield from probe_segment(k, tracklets)
                    counts = np.array([(probe.tracklet == t).sum() for t in tracklets])
                    if counts.min() <= 5:
                        steps.append({"step": len(steps), "range": rng, "status": "rejected",
                                      "reason": "NotEnoughImages"})
                        continue
                    mapping, why = label_candidate(predict(model, probe.images, device), probe.tracklet,
                                                   n, settings.recognition_segment_add_factor)
                    if mapping is None:
                        retry.append(k)
                        yield rejected(rng, why)
                        continue
                    if contradicted(mapping, trained_label, t_start, t_end):
                        # the network now names a trained tracklet otherwise: not trusted
                        retry.append(k)
                        yield rejected(rng, "ConflictsWithTraining")
                        continue
                    against = contradicted(mapping, claimed, t_start, t_end)
                    drop = {claimed_by[t] for t in against}
                    if against and drop <= disagreed and k in disagreed:
                        # they disagreed before and a better network did not settle it: the
                        # segment ranked first keeps its labels (as TRex's order would), so
                        # that a network that stays unsure does not lose both for good
                        retry.append(k)
                        yield rejected(rng, "DisagreesWithAnotherSegment")
                        continue
                    if against:
                        # two segments of this batch name the same animals otherwise: one of them
                        # is wrong and nothing yet says which, so neither is trained on now; the
                        # better network of a later round asks again (crowded 10 x 3000 seed 2: a
                        # swap of two look-alikes, taken first, made the right segment after it a
                        # "conflict", and the network then learnt the swap from 3 more segments)
                        disagreed.update(drop | {k})
                        for j, _, _ in batch:
                            if j in drop:
                                retry.append(j)
                                yield rejected([int(segments.start[j]), int(segments.end[j])],
                                               "DisagreesWithAnotherSegment")
                        batch = [entry for entry in batch if entry[0] not in drop]
                        claimed = {t: m[t] for _, ts, m in batch for t in ts if t not in used}
                        claimed_by = {t: j for j, ts, _ in batch for t in ts if t not in used}
                        retry.append(k)
                        yield rejected(rng, "DisagreesWithAnotherSegment")
                        continue
                    batch.append((k, tracklets, mapping))
                    claimed.update({t: mapping[t] for t in tracklets if t not in used})
                    claimed_by.update({t: k for t in tracklets if t not in used})
                if not batch:
                    continue
                ranges = [[int(segments.start[k]), int(segments.end[k])] for k, _, _ in batch]
                remembered = dict(trained_label)
                new = [t for t in claimed]
                new_train, new_val = yield from labelled(new, [claimed[t] for t in new])
                salt = _salt(train_set, cap)
                candidate_train = Samples.concatenate([salt, new_train])
                candidate_val = Samples.concatenate([val_set, new_val])
                saved = {key: v.clone() for key, v in model.state_dict().items()}
                candidate_ranges = [*trained_ranges, *[(a, b) for a, b in ranges]]
                label = f"segment {ranges[0]}" if len(batch) == 1 else f"{len(batch)} segments"
                # the best network so far measured on the frames the new unit is measured on:
                # the frames left untrained shrink to the hard ones as segments are added, so a
                # best measured earlier, on easier frames, would refuse every later segment
                measured_on = untrained(disc, candidate_ranges)
                best_here = uniqueness(predict(best_model, measured_on[0], device), measured_on[1], n)
                unit = yield from unit_events(label, model, candidate_train.images,
                                              candidate_train.label, candidate_val.images,
                                              candidate_val.label, measured_on, config, device,
                                              previous_best=best_here)
                # one rule: segments that keep the uniqueness within 2 % of the best (TRex)
                # keep their images and the weights trained with them; otherwise both go
                accepted = unit.uniqueness >= ACCEPT_SHARE_OF_BEST * best_here
                if accepted:
                    train_set = Samples.concatenate([train_set, new_train])
                    val_set = candidate_val
                    for _, tracklets, _ in batch:
                        used.update(tracklets)
                    trained_ranges[:] = candidate_ranges
                    best_u = max(best_here, unit.uniqueness)
                    if unit.uniqueness >= best_here:
                        best_model = copy.deepcopy(model)
                    pending.extend(k for k in retry if k not in pending)  # a better network asks again
                    retry.clear()
                else:
                    model.load_state_dict(saved)
                    trained_label.clear()
                    trained_label.update(remembered)
                    if len(batch) > 1:  # one of them may be the culprit: halves from here
                        at_once = max(1, len(batch) // 2)
                        pending[:0] = [k for k, _, _ in batch]
                        tried.difference_update(k for k, _, _ in batch)
                        yield {"stage": "accumulation", "message": f"{len(batch)} segments together lowered "
                               f"the uniqueness to {unit.uniqueness:.3f}: trying them {at_once} at a time"}
                        continue
                status = "accepted" if accepted else "rejected"
                for rng in ranges:
                    steps.append({"step": len(steps), "range": rng, "status": status,
                                  "uniqueness": unit.uniqueness, "epochs": unit.epochs,
                                  "reason": "" if accepted else "UniquenessTooLow"})
                    yield {"stage": "step", "step": len(steps) - 1, "uniqueness": unit.uniqueness,
                           "accepted": accepted, "best_uniqueness": best_u if accepted else best_here,
                           "message": f"segment {rng}: {status}, uniqueness {unit.uniqueness:.3f} "
                           f"(best {best_u if accepted else best_here:.3f} on the same frames, "
                           f"target {target:.3f})"}

        # -- final step on all images ------------------------------------------------------------
        # (from pairs there is no final step: it would train on the same images again)
        final_step = settings.gpu_accumulation_enable_final_step and train_set is not None \
            and not from_pairs
        if final_step and best_u >= FINAL_STEP_UNTIL:
            steps.append({"step": len(steps), "status": "final skipped", "uniqueness": best_u})
            yield {"stage": "step", "step": len(steps) - 1, "uniqueness": best_u, "accepted": True,
                   "message": f"final step skipped: uniqueness {best_u:.3f} leaves nothing to gain"}
        elif final_step:
            # every training image at once; the hold-out stays out (it validates this step too)
            saved = {key: v.clone() for key, v in model.state_dict().items()}
            epochs = max(3, int(FINAL_STEP_EPOCHS_SHARE * settings.gpu_max_epochs))
            unit = yield from unit_events("final step", model, train_set.images, train_set.label,
                                          val_set.images, val_set.label,
                                          untrained(disc, trained_ranges), config, device,
                                          previous_best=best_u, max_epochs=epochs, final=True)
            kept = unit.uniqueness >= best_u
            if kept:
                best_u = unit.uniqueness
            else:
                model.load_state_dict(saved)
            steps.append({"step": len(steps), "status": "final " + ("kept" if kept else "discarded"),
                          "uniqueness": unit.uniqueness, "epochs": unit.epochs})
            yield {"stage": "step", "step": len(steps) - 1, "uniqueness": unit.uniqueness,
                   "accepted": kept, "message": f"final step: uniqueness {unit.uniqueness:.3f} "
                   f"({'kept' if kept else 'discarded'})"}

    # -- apply: predict every tracklet, assign identities --------------------------------------
    yield {"stage": "applying", "message": "predicting identities for every tracklet"}
    chosen = []
    long_enough = 2 * run.fps
    for t in np.unique(requests.tracklet):
        members = np.flatnonzero(requests.tracklet == t)
        # long tracklets densely (a switch inside must show), short ones a few images
        per = PREDICT_LONG_TRACKLET if len(members) >= long_enough else PREDICT_PER_TRACKLET
        chosen.append(regular_subsample(members, per))
    chosen_index = np.sort(np.concatenate(chosen)) if chosen else np.empty(0, np.int64)
    all_probs, all_tracklets, all_frames = [], [], []
    block_size = max(1000, images_within(settings.gpu_max_sample_gb, params.size))
    for a in range(0, len(chosen_index), block_size):
        block = yield from cut(chosen_index[a: a + block_size], why="cutting images to predict")
        all_probs.append(predict(model, block.images, device))
        all_tracklets.append(block.tracklet)
        all_frames.append(block.frame)
    # the clean parts of animals split at contacts: one image each, too few for the network to
    # name them, but a vote in the retrack of the gaps between named tracklets (crowded 10 x
    # 3000: +1 point right; realistic 8 x 3000 seed 2: +0.27). Each is cut to its own body in
    # the clump (see _bodies) and, with no motion to point it, voted on both ways round
    parts = requests.parts()
    for a in range(0, len(parts.frames), block_size):
        block = yield from progress_events(
            cut_samples, video, run.background,
            parts.rows(np.arange(a, min(a + block_size, len(parts.frames)))), params, should_stop,
            stage="images", message="cutting images of animals split at contacts")
        all_probs.append(predict_either_way(model, block.images, device))
        all_tracklets.append(block.tracklet)
        all_frames.append(block.frame)
    probs = np.concatenate(all_probs) if all_probs else np.empty((0, n))
    sample_tracklets = np.concatenate(all_tracklets) if all_tracklets else np.empty(0, np.int64)
    sample_frames = np.concatenate(all_frames) if all_frames else np.empty(0, np.int64)
    tracking, sample_tracklets, cuts = split_suspicious_tracklets(
        run.result, sample_frames, sample_tracklets, probs, run.fps)
    if cuts:
        yield {"stage": "split", "message": f"split {len(cuts)} tracklet(s) where the predicted "
               "identity changed for good", "cuts": cuts}
    identities = assign_identities(tracking, sample_tracklets, probs, n, run.fps,
                                   settings.manual_matches, max_speed_px(run))
    # one prediction of the discrimination images serves every figure
    disc_probs = predict(model, disc[0], device)
    keep = untrained_mask(disc[1], trained_ranges)
    with_parts = uniqueness(disc_probs[keep], disc[1][keep], n) if keep.any() else 0.0
    whole_u = whole_animal_uniqueness(disc_probs[keep], disc[1][keep], disc_whole[keep], n)
    final_u = with_parts if whole_u is None else whole_u
    if whole_u is None:  # the parts are counted in ours already: no second figure
        with_parts = float("nan")
    # TRex's own count: every measured frame as it is, whole animals only (§4.4)
    counted = disc_whole if disc_whole.any() else np.ones(len(disc_whole), bool)
    trex_u = uniqueness(disc_probs[counted], disc[1][counted]) if len(disc[0]) else 0.0
    if val_set is not None and len(val_set):
        holdout = holdout_report(predict(model, val_set.images, device), val_set.label, n)
    else:
        holdout = holdout_report(np.empty((0, n)), np.empty(0, np.int64), n)
    run.result = tracking  # only now, after success: split tracklets become the run's tracklets
    elapsed = time.perf_counter() - started
    hidden = hidden_positions(run.result, identities, n, run.fps, max_speed_px(run))
    coverage = identity_coverage(run.result, identities, n, hidden)
    share = coverage.pop("all")
    how = ", ".join(f"{name} {value:.1%}" for name, value in coverage.items() if value > 0)
    checked = holdout_text(holdout)
    guessing = chance_uniqueness(n)
    if keep.any() and final_u < guessing:
        yield {"stage": "warning", "message": f"WARNING: uniqueness {final_u:.3f} is no better than "
               f"guessing ({guessing:.2f} for {n} animals): the identities cannot be trusted. Most "
               "often the tracking is at fault (TRex's advice): check the tracking's warnings, "
               "track_max_individuals, blob_size_ranges and track_max_speed, then identify again"}
    yield {"stage": "done", "uniqueness": final_u, "uniqueness_all_frames": trex_u,
           "uniqueness_with_parts": with_parts,
           "identified_share": share, "sources": coverage, "holdout": holdout,
           "message": f"done in {elapsed:.0f} s: "
           f"{uniqueness_text(final_u, trex_u, with_parts)}; "
           f"{share:.1%} of the {n} x {n_frames} animal-frames have an identity ({how or 'none'})"
           + (f"; {checked}" if checked else "")}
    return IdentificationResult(identities, final_u, model, device_name, steps, train_set, val_set, elapsed,
                                settings, trex_u, holdout, with_parts)


def chance_uniqueness(n_identities: int) -> float:
    """The uniqueness of a network that names each animal of a frame at random: the expected share
    of distinct names among N random ones, 1 - (1 - 1/N)^N (0.75 for 2 animals, 0.70 for 3, 0.66
    for 8; TRex's confidence factor would only lower it). A trained network below it learnt nothing
    that tells the animals apart, which TRex's documentation finds is a tracking error > 90 % of the
    time."""
    n = max(1, int(n_identities))
    return 1.0 - (1.0 - 1.0 / n) ** n


def uniqueness_text(uniqueness: float, all_frames: float, with_parts: float | None = None) -> str:
    """The uniqueness in words, with TRex's figure beside it: ours is measured on the frames
    not trained on (between the segments: contacts, crossings), TRex's on every measured frame;
    a user comparing with TRex needs its figure, and ours says what the network has learnt.

    ``with_parts``: where ours is on whole animals (TRex's rule), the figure that also counts
    the parts of animals split at contacts, which is what training is held to; None where too
    few frames show every animal whole and the parts are counted in ours already (or nan)."""
    if with_parts is None or math.isnan(with_parts):
        return (f"uniqueness {uniqueness:.3f} on frames not trained on "
                f"({all_frames:.3f} on all measured frames, as TRex counts)")
    return (f"uniqueness {uniqueness:.3f} on whole animals in frames not trained on "
            f"({with_parts:.3f} counting the parts of animals split at contacts; "
            f"{all_frames:.3f} on all measured frames, as TRex counts)")


# below this share of the animal-frames in the global segments' tracklets, identification
# starts from tracklet pairs although global segments exist: measured (bench_identification.py,
# global segment against --start pairs), a crowd of 20 with 3 short global segments (5 % of the
# animal-frames) 72.5 % against 82.0 % right; a crowd of 10 (47 %) 94.8 % against 95.2 %;
# realistic 8 animals (89 %), zebrafish test_A / test_B (94 % / 91 %) are learnt from segments
PAIRS_BELOW_SEGMENT_COVERAGE = 0.25


def choose_start(run: TrackingRun, start_from: str = "automatic", continuing: bool = False
                 ) -> tuple[bool, str]:
    """(start from tracklet pairs?, why, in words for the panel and the command line).

    TRex starts from the best global segment and accumulates the others. Where the global
    segments together show only a small part of the video (a crowd, all apart for a few frames
    now and then), the network learns too little there to name the rest, while the tracklet
    pairs use every tracklet from the start. A loaded network (Continue) is checked on the
    best global segment wherever there is one."""
    n = run.result.assignment.shape[1]
    segments = run.segments
    if start_from == "pairs":
        return True, "asked for"
    if not len(segments):
        return True, "no global segment"
    share = segment_coverage(segments, run.result.tracklet_of, run.result.tracklets)
    if share < PAIRS_BELOW_SEGMENT_COVERAGE and not continuing:
        return True, (f"the {len(segments)} global segment(s) hold only {share:.0%} of the {n} animals' "
                      f"frames (below {PAIRS_BELOW_SEGMENT_COVERAGE:.0%})")
    first, last = segments.best()
    return False, (f"starting from the best global segment (frames {first}-{last}); the "
                   f"{len(segments)} global segment(s) hold {share:.0%} of the {n} animals' frames")


PAIR_MIN_IMAGES = 3  # a tracklet with fewer whole images says too little to learn from
# without a global segment, at least this share of the N animals must be seen together in some
# frame: a crowd always hides one or two, but far fewer means track_max_individuals is too high
# (N clusters would then cut animals in two)
PAIRS_MIN_SHARE_SEEN = 0.8


def _too_few_tracklets(found: int, n: int) -> NapariTrexError:
    return NapariTrexError(f"only {found} tracklets have {PAIR_MIN_IMAGES} or more images for {n} "
                           "animals: nothing to learn identities from; check the tracking "
                           "(track_max_individuals, blob_size_ranges, track_max_speed)")


def _names_from_pairs(run: TrackingRun, requests: _Requests, cut: Callable[..., Any], n: int,
                      size: tuple[int, int], settings: Settings, device: Any,
                      should_stop: Callable[[], bool] | None, why: str
                      ) -> Generator[Event, None, dict[int, int]]:
    """Tracklet -> identity for the tracklets that an embedding learnt from tracklet pairs names
    with confidence (:mod:`.pairs`): the start when no global segment shows every animal."""
    t = run.result.tracklets
    counts = np.bincount(requests.tracklet, minlength=len(t))
    usable = np.flatnonzero(counts >= PAIR_MIN_IMAGES)
    if not len(usable):  # before anything else: "seen together" means nothing without tracklets
        raise _too_few_tracklets(len(usable), n)
    most_frame, most = pairs.most_coexisting(t.start[usable], t.end[usable], counts[usable])
    if len(most) < PAIRS_MIN_SHARE_SEEN * n:
        raise NapariTrexError(f"no global segment, and at most {len(most)} tracklets are ever seen at "
                              f"once for track_max_individuals = {n}: if the video shows "
                              f"{len(most)} animals, set track_max_individuals = {len(most)}; "
                              "otherwise check the tracking (blob_size_ranges, threshold)")
    if len(most) < n:
        yield {"stage": "warning", "message": f"WARNING: at most {len(most)} of the {n} animals are "
               "ever seen at once: if the video shows fewer, set track_max_individuals to that"}
    if not len(run.segments):
        why = (f"no global segment (all {n} animals, each in one tracklet, for "
               f"{MIN_GLOBAL_SEGMENT_FRAMES}+ frames; the most seen together: {len(most)}, in frame "
               f"{most_frame})")
    yield {"stage": "path", "path": "pairs", "most_together": int(len(most)),
           "message": f"{why}: learning from tracklet pairs"}
    if len(usable) < n:
        raise _too_few_tracklets(len(usable), n)
    by_tracklet = np.argsort(requests.tracklet, kind="stable")
    bounds = np.searchsorted(requests.tracklet[by_tracklet], np.arange(len(t) + 1))
    per = pairs.images_per_tracklet(len(usable), size, settings.gpu_max_sample_gb)
    index = np.sort(np.concatenate([regular_subsample(by_tracklet[bounds[k]: bounds[k + 1]], per)
                                    for k in usable]))
    samples = yield from cut(index, why=f"cutting images of {len(usable)} tracklets")
    position = np.full(len(t), -1, np.int64)
    position[usable] = np.arange(len(usable))
    owner = position[samples.tracklet]
    negatives = pairs.coexisting_pairs(t.start[usable], t.end[usable])
    if not len(negatives):
        raise NapariTrexError("no two tracklets are ever seen at once: nothing tells the animals "
                              "apart; check the tracking (track_max_individuals)")
    started = time.perf_counter()
    events = pairs.train_embedding_events(samples.images, owner, negatives, size,
                                          device, settings.seed, should_stop=should_stop)
    while True:
        try:
            record = next(events)
        except StopIteration as done:
            embedder = done.value
            break
        # no done/total: learning usually stops long before the step cap, which would mislead
        yield {"stage": "pairs", **record,
               "message": f"  learning from {len(negatives)} pairs of coexisting tracklets: step "
               f"{record['step']}, {record['separation']:.1%} of pairs told apart "
               f"({time.perf_counter() - started:.0f} s)"}
    z = pairs.embed(embedder, samples.images, device)
    means = pairs.tracklet_means(z, owner, len(usable))
    _, centroids = pairs.cluster_tracklets(means, counts[usable].astype(float), n,
                                           t.start[usable], t.end[usable], negatives)
    probs = pairs.cluster_probabilities(z, centroids)
    named = assign_identities(run.result, samples.tracklet, probs, n, run.fps, settings.manual_matches)
    chosen = np.flatnonzero(np.isin(named.source, ("network", "manual")))
    frames_named = int((t.end[chosen] - t.start[chosen] + 1).sum())
    yield {"stage": "pairs", "message": f"{len(chosen)} tracklets ({frames_named} animal-frames) "
           f"named from {n} clusters: training the identity network on them"}
    if not len(chosen):
        raise NapariTrexError("the tracklets could not be told apart from their pairs: nothing to "
                              "train on (longer tracklets would help: check the tracking)")
    shown = len(np.unique(named.identity[chosen]))
    if shown < n:  # the network cannot learn an animal it is shown no image of
        yield {"stage": "warning", "message": f"WARNING: the tracklets named from pairs show only "
               f"{shown} of the {n} animals: the network cannot learn the others (longer "
               "tracklets would help: check the tracking's warnings)"}
    return {int(k): int(named.identity[k]) for k in chosen}


class _KeptCrops:
    """Crops already cut, by request, kept as uint8 across steps (training, probing and
    applying see the same animal-frames: cutting means decoding, so each is cut once), within
    ``gpu_max_sample_gb`` (counted as float32, like the training images)."""

    def __init__(self, n_requests: int, size: tuple[int, int], max_gb: float) -> None:
        self.where = np.full(n_requests, -1, np.int64)
        self.size = size
        self.limit = images_within(max_gb, size)
        self.store = np.empty((0, size[1], size[0]), np.uint8)
        self.count = 0

    def has(self, index: np.ndarray) -> np.ndarray:
        return self.where[index] >= 0

    def get(self, index: np.ndarray) -> np.ndarray:
        return self.store[self.where[index]]

    def add(self, index: np.ndarray, crops: np.ndarray) -> None:
        room = min(len(index), self.limit - self.count)
        if room <= 0:
            return
        if self.count + room > len(self.store):
            grown = np.empty((max(self.count + room, 2 * len(self.store)), self.size[1], self.size[0]),
                             np.uint8)
            grown[:self.count] = self.store[:self.count]
            self.store = grown
        self.store[self.count: self.count + room] = crops[:room]
        self.where[index[:room]] = np.arange(self.count, self.count + room)
        self.count += room


def contradicted(mapping: dict[int, int], known: dict[int, int], start: np.ndarray,
                 end: np.ndarray) -> set[int]:
    """The tracklets of ``known`` (tracklet -> identity) that ``mapping`` contradicts: one it
    names otherwise, or one that shares frames with a tracklet ``mapping`` gives the same identity
    (one animal is never in two tracklets at once). ``start``/``end``: every tracklet's frames."""
    if not known:
        return set()
    tracklets = np.fromiter(known, np.int64, len(known))
    names = np.fromiter(known.values(), np.int64, len(known))
    out: set[int] = set()
    for t, identity in mapping.items():
        same = (names == identity) & (tracklets != t) & (start[tracklets] <= end[t]) & \
            (end[tracklets] >= start[t])
        out.update(int(v) for v in tracklets[same])
        if t in known and known[t] != identity:
            out.add(int(t))
    return out


UNTRAINED_FRAMES_MIN = 30  # frames left outside training needed to measure uniqueness there


def untrained(disc: tuple[np.ndarray, np.ndarray], ranges: list[tuple[int, int]]
              ) -> tuple[np.ndarray, np.ndarray]:
    """The discrimination images outside the frames trained on: uniqueness measured on
    training frames would reward memory. All of them when too few frames would be left."""
    images, frames = disc
    keep = untrained_mask(frames, ranges)
    return (images[keep], frames[keep]) if not keep.all() else disc


def untrained_mask(frames: np.ndarray, ranges: list[tuple[int, int]]) -> np.ndarray:
    """Which of the images taken in ``frames`` lie outside the frames trained on (all of them
    when too few frames would be left, see :func:`untrained`)."""
    inside = np.zeros(len(frames), bool)
    for a, b in ranges:
        inside |= (frames >= a) & (frames <= b)
    if not inside.any() or len(np.unique(frames[~inside])) < UNTRAINED_FRAMES_MIN:
        return np.ones(len(frames), bool)
    return ~inside


def _salt(train: Samples, cap: int | None) -> Samples:
    """Earlier training data, each identity subsampled at regular intervals to the cap."""
    if cap is None:
        return train
    keep = [regular_subsample(np.flatnonzero(train.label == c), cap) for c in np.unique(train.label)]
    return train.subset(np.sort(np.concatenate(keep)))


def identify(run: TrackingRun, video: Video, settings: Settings | None = None,
             progress: Callable[[Event], None] | None = None, **kwargs: Any) -> IdentificationResult:
    """Run :func:`identify_events` to the end, passing each event to ``progress``."""
    events = identify_events(run, video, settings, **kwargs)
    while True:
        try:
            event = next(events)
        except StopIteration as done:
            return done.value
        if progress is not None:
            progress(event)
