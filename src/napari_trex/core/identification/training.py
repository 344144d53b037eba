"""Training: uniqueness, one training unit, and TRex's accumulation of global segments.

*Uniqueness* (trex-reference §4.4, exactly): on ~333 evenly spaced frames, per frame f with
n_f images, U_f = (#distinct argmax ids / n_f) · E(mean over those ids of their highest
probability), E(v) = (1 + e^−π) / (1 + e^(−π·v)); the video's uniqueness is the mean U_f.
It needs no labels, which is why it drives training: a network that tells every animal in
every frame apart with confidence has learnt the identities.

*Accumulation* (§4.5): train on the best-quality global segment (every animal in one
tracklet, labelled by its tracking slot), then label further global segments with the
network and accept one only if all N predicted identities are distinct and confident
(> ``recognition_segment_add_factor`` / N); keep a new state only if uniqueness does not
drop below 0.98 of the best; stop at ``gpu_accepted_uniqueness``; finish with a final unit
on all images. Deviations: cross-entropy loss and 'same' padding as TRex v2 (not v1's focal
loss); an epoch is ceil(N_train / B) steps with a floor of ``gpu_min_iterations`` (the
reference's advice, without v1.1.9's rounding quirk). Within a unit, the per-epoch uniqueness
that picks the best state and drives the stopping rules is computed on at most
:data:`EPOCH_UNIQUENESS_FRAMES` of the discrimination frames (evenly spread); the unit's
result is the uniqueness of the restored best state on all of them. On a CPU the full
per-epoch evaluation cost more than the training itself. One stopping rule is added to §4.3:
a unit (the final step too) ends when two epochs in a row classify every validation image
correctly with a validation loss below :data:`NOTHING_LEFT_LOSS`; TRex's relative loss-plateau
rule rarely fires at such tiny losses, so the final step ran its full epoch cap for nothing.
For the same reason the final step, like any unit, ends after two epochs in a row with every
identity > 97 % right on the hold-out (on a CPU each of its epochs was worth 40 s for nothing).
And a unit ends when its last :data:`GAIN_WINDOW` epochs raised the best uniqueness by less
than :data:`GAIN_SHARE` of what was left to 1: on fish that never reach the target, TRex's
plateau rule (consecutive epochs within 0.002) does not fire on a noisy curve, and a unit ran
on for minutes to gain a few thousandths (zebrafish test_A: epochs 16-36 of the initial unit
took 0.834 to 0.851 in 220 s; the next segments took it to 0.88 in one epoch). More data, not
more epochs, is what raises the uniqueness then. The best state is kept either way. A unit
that adds segments also ends when, after :data:`GAIN_WINDOW` epochs, its best uniqueness is
still below the acceptance line (:data:`ACCEPT_SHARE_OF_BEST` x the best before it): TRex
waits for it to fall below the square of the best, which on 8 fish meant 5-10 more epochs of
a unit that was then rejected. Far below, under the square of the line (0.96 x the best), it
ends after 2 epochs: zebrafish test_B's rejected segments sat 6-15 % below the best from
their first epoch on (three such units: 323 -> 290 s, the same result).

The final step is where more epochs do pay: every accepted image at once, from the network
the accumulation left. It anneals (its learning rate falls along a cosine to 0 at its last
epoch) and runs its epochs, which the window rules above would cut short while the rate is
still high: on zebrafish test_B the uniqueness stayed at 0.88-0.89 for its first 10 epochs
and rose to 0.91 in the last 5 (at a constant rate it jittered at 0.86-0.89 and the step was
discarded). It still ends early when every identity is learnt on the hold-out.

What is measured after each epoch, and kept, is a moving average of the trained weights
(:data:`WEIGHT_AVERAGE_DECAY`), not the weights of the last step: at a constant learning rate
they jitter, the per-epoch uniqueness with them (zebrafish test_B: +-0.03 from one epoch to the
next), and the best of a noisy curve is a lucky epoch that later units cannot match.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Generator
from typing import Any
from dataclasses import dataclass, field
import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ..errors import Cancelled
from .network import IdentityNetwork, fast_math, predict, seeded, to_tensor

EPOCH_UNIQUENESS_FRAMES = 100
ACCEPT_SHARE_OF_BEST = 0.98  # new segments are kept if the uniqueness stays >= this x the best
GAIN_WINDOW = 3  # epochs: a unit ends when these raised the best uniqueness by less than ...
GAIN_SHARE = 0.1  # ... this share of what was left to 1
NOTHING_LEFT_LOSS = 1e-3  # validation loss below this, every image right: more epochs only cost time
#: The network that is measured and kept is an exponential moving average of the trained
#: weights over about 1 / (1 - this) optimiser steps (an epoch is at least 100); over fewer
#: in a unit's first steps, (1 + n) / (10 + n) after n steps, so a new network is not held
#: back by its random start.
WEIGHT_AVERAGE_DECAY = 0.99


def _moving_average(decay: float) -> Callable:
    """``multi_avg_fn`` for torch's ``AveragedModel``: an exponential moving average that
    warms up (see :data:`WEIGHT_AVERAGE_DECAY`); counters (batch norm's) follow the model."""
    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor
               ) -> None:
        n = int(n_averaged)
        weight = 1.0 - min(decay, (1.0 + n) / (10.0 + n))
        for a, c in zip(averaged, current):
            if a.is_floating_point():
                a.lerp_(c, weight)
            else:
                a.copy_(c)
    return update


def _e(v: np.ndarray | float) -> np.ndarray | float:
    return (1 + math.exp(-math.pi)) / (1 + np.exp(-math.pi * np.asarray(v)))


def uniqueness_per_frame(probs: np.ndarray, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(frames, U_f)`` for softmax ``probs`` (M, N) of images taken in ``frames`` (M,)."""
    if not len(frames):
        return np.empty(0, np.int64), np.empty(0)
    order = np.argsort(frames, kind="stable")
    frames, probs = frames[order], probs[order]
    ids = probs.argmax(axis=1)
    best = probs.max(axis=1)
    unique_frames, starts = np.unique(frames, return_index=True)
    ends = np.append(starts[1:], len(frames))
    values = np.empty(len(unique_frames))
    for k, (a, b) in enumerate(zip(starts, ends)):
        f_ids, f_best = ids[a:b], best[a:b]
        distinct = np.unique(f_ids)
        top = [f_best[f_ids == i].max() for i in distinct]
        values[k] = len(distinct) / (b - a) * float(_e(np.mean(top)))
    return unique_frames, values


COMPLETE_FRAMES_MIN = 20  # frames with every animal needed to measure uniqueness on them alone


def uniqueness(probs: np.ndarray, frames: np.ndarray, n_identities: int | None = None) -> float:
    """TRex's uniqueness: the mean over frames of U_f (0 when there are no images).

    With ``n_identities``: a frame that shows fewer animals is easier to tell apart (two images
    are "all distinct" more easily than N), so only frames with all N animals count when there
    are at least :data:`COMPLETE_FRAMES_MIN` of them; otherwise every frame counts in
    proportion to the animals it shows."""
    f, values = uniqueness_per_frame(probs, frames)
    if not len(values):
        return 0.0
    if n_identities:
        shown = np.bincount(np.searchsorted(f, frames), minlength=len(f))
        complete = shown >= n_identities
        if complete.sum() >= COMPLETE_FRAMES_MIN:
            return float(values[complete].mean())
        weight = np.minimum(shown, n_identities) / n_identities
        return float((values * weight).sum() / weight.sum())
    return float(values.mean())


def whole_animal_uniqueness(probs: np.ndarray, frames: np.ndarray, whole: np.ndarray,
                            n_identities: int) -> float | None:
    """The uniqueness as TRex defines it (trex-reference §4.4): on whole animals only, not on
    the parts of blobs split at contacts, and here on the frames that show all N of them whole.

    A part of a clump holds pieces of its neighbour (two fish crossing give an X), so the
    frames with a part measure how well crossings are cut as much as how well the network
    knows the animals. None where fewer than :data:`COMPLETE_FRAMES_MIN` frames show every
    animal whole (animals always in contact): the frames left would show some animals only,
    which are told apart more easily than N."""
    whole = np.asarray(whole, bool)
    shown, counts = np.unique(frames[whole], return_counts=True)
    complete = shown[counts >= n_identities]
    if len(complete) < COMPLETE_FRAMES_MIN:
        return None
    chosen = whole & np.isin(frames, complete)
    return uniqueness(probs[chosen], frames[chosen], n_identities)


HOLDOUT_CONFUSED_MIN = 0.02  # a pair is named as hard to tell apart from this share swapped


def holdout_report(probs: np.ndarray, labels: np.ndarray, n_identities: int) -> dict[str, Any]:
    """How well the finished network names each identity on the hold-out (images never trained
    on, labelled as their tracklets were trained), and which identities it mixes up most.

    The uniqueness says how well the network tells the animals of a frame apart, not which ones
    it confuses; a biologist checking the result needs the second: the timeline of the pair named
    here is where a swap is likeliest (TRex plots a uniqueness per class for the same reason).
    ``confused``: pairs whose images were named as each other in at least
    :data:`HOLDOUT_CONFUSED_MIN` of the pair's images, worst first (at most 3)."""
    labels = np.asarray(labels, np.int64)
    if not len(labels):
        return {"images": 0, "accuracy": None, "accuracy_per_identity": [None] * n_identities,
                "confused": []}
    named = np.asarray(probs).argmax(axis=1)
    confusion = np.zeros((n_identities, n_identities), np.int64)
    np.add.at(confusion, (labels, named), 1)
    shown = confusion.sum(axis=1)
    per = [float(confusion[i, i] / shown[i]) if shown[i] else None for i in range(n_identities)]
    # each pair's images named as the other, of both animals' images (one array, not a loop)
    images = shown[:, None] + shown[None, :]
    share = np.divide(confusion + confusion.T, images, out=np.zeros(images.shape), where=images > 0)
    a, b = np.nonzero(np.triu(share >= HOLDOUT_CONFUSED_MIN, k=1))
    worst = np.argsort(-share[a, b], kind="stable")[:3]
    confused = [{"identities": [int(a[k]), int(b[k])], "share": float(share[a[k], b[k]])} for k in worst]
    return {"images": int(len(labels)), "accuracy": float(np.trace(confusion) / len(labels)),
            "accuracy_per_identity": per, "confused": confused}


def holdout_text(report: dict[str, Any]) -> str:
    """The hold-out report in one line, for the terminal and the panel ("" without one)."""
    if not report or not report.get("images"):
        return ""
    text = f"{report['accuracy']:.1%} of {report['images']} hold-out images named right"
    per = report.get("accuracy_per_identity") or []
    unchecked = [i for i, value in enumerate(per) if value is None]
    if unchecked:  # a perfect hold-out of some identities says nothing about the others
        name = "identity" if len(unchecked) == 1 else "identities"
        text += f" ({name} {', '.join(map(str, unchecked))} not in the hold-out)"
    if report["confused"]:
        worst = report["confused"][0]
        a, b = worst["identities"]
        text += f"; hardest to tell apart: {a} and {b} ({worst['share']:.0%} of their images swapped)"
    return text


def frame_subsample(frames: np.ndarray, max_frames: int) -> np.ndarray:
    """Indices of the images taken in at most ``max_frames`` evenly spread distinct frames."""
    distinct = np.unique(frames)
    if len(distinct) <= max_frames:
        return np.arange(len(frames))
    keep = distinct[np.linspace(0, len(distinct) - 1, max_frames).round().astype(int)]
    return np.flatnonzero(np.isin(frames, keep))


def batch_size(n_identities: int) -> int:
    """TRex: next power of two >= N, at most 128, at least 64."""
    return max(64, min(128, 1 << max(0, math.ceil(math.log2(max(1, n_identities))))))


@dataclass
class TrainingConfig:
    n_identities: int
    size: tuple[int, int]
    learning_rate: float = 5e-4  # Settings.gpu_learning_rate
    max_epochs: int = 150
    accepted_uniqueness: float = 0.9
    min_iterations: int = 100  # TRex's gpu_min_iterations: fewest optimiser steps per epoch
    seed: int = 0


@dataclass
class UnitResult:
    uniqueness: float
    epochs: int
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_because: str = ""


def _shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Random shift of the whole batch by up to ``max_shift`` px, zero fill (TRex's only
    augmentation)."""
    if max_shift <= 0:
        return images
    dx, dy = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=generator))
    out = torch.roll(images, shifts=(dy, dx), dims=(2, 3))
    if dy > 0:
        out[:, :, :dy] = -1.0
    elif dy < 0:
        out[:, :, dy:] = -1.0
    if dx > 0:
        out[:, :, :, :dx] = -1.0
    elif dx < 0:
        out[:, :, :, dx:] = -1.0
    return out


def train_unit(*args: Any, **kwargs: Any) -> UnitResult:
    """:func:`train_unit_events` run to the end (for callers that need no per-epoch news)."""
    events = train_unit_events(*args, **kwargs)
    while True:
        try:
            next(events)
        except StopIteration as done:
            return done.value


def train_unit_events(model: IdentityNetwork, train_images: np.ndarray, train_labels: np.ndarray,
                      val_images: np.ndarray, val_labels: np.ndarray,
                      discrimination: tuple[np.ndarray, np.ndarray], config: TrainingConfig,
                      device: torch.device, *, previous_best: float = 0.0,
                      max_epochs: int | None = None, final: bool = False,
                      should_stop: Callable[[], bool] | None = None
                      ) -> Generator[dict[str, float], None, UnitResult]:
    """Train until a stopping rule of §4.3 fires, yielding each epoch's figures; the best
    state by uniqueness is kept and restored at the end."""
    # dropout draws from torch's global generator: seeded for this unit, given back after
    with seeded(config.seed, device):
        generator = torch.Generator().manual_seed(config.seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
        loss_fn = nn.CrossEntropyLoss()
        x_train = to_tensor(train_images, device)
        y_train = torch.from_numpy(train_labels.astype(np.int64)).to(device)
        disc_images, disc_frames = discrimination
        quick = frame_subsample(disc_frames, EPOCH_UNIQUENESS_FRAMES)
        quick_images, quick_frames = disc_images[quick], disc_frames[quick]
        bs = batch_size(config.n_identities)
        steps = max(config.min_iterations, math.ceil(len(x_train) / bs)) if len(x_train) >= 2 else 0
        shift = max(0, min(2, int(0.05 * min(config.size))))
        epochs_cap = max_epochs if max_epochs is not None else config.max_epochs
        # the final step anneals: its learning rate falls along a cosine to 0 at its last epoch
        annealing = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda k: 0.5 * (1 + math.cos(math.pi * min(1.0, k / (epochs_cap * steps))))
        ) if final and epochs_cap > 0 and steps > 0 else None
        best_u, best_state = -1.0, copy.deepcopy(model.state_dict())
        average = AveragedModel(model, multi_avg_fn=_moving_average(WEIGHT_AVERAGE_DECAY),
                                use_buffers=True)
        shown = average.module
        precision = fast_math(device)  # decided once per unit, entered at every step
        history: list[dict[str, float]] = []
        reason = "max epochs"
        epoch = 0
        while epochs_cap == 0 or epoch < epochs_cap:
            if should_stop is not None and should_stop():
                raise Cancelled("training cancelled")
            model.train()
            total, seen = 0.0, 0
            for idx in _batches(len(x_train), bs, steps, generator):
                if should_stop is not None and should_stop():  # an epoch can take a minute on a CPU
                    raise Cancelled("training cancelled")
                idx = idx.to(device)
                optimizer.zero_grad()
                with precision:
                    loss = loss_fn(model(_shift(x_train[idx], shift, generator)), y_train[idx])
                loss.backward()
                optimizer.step()
                average.update_parameters(model)
                if annealing is not None:
                    annealing.step()
                total += float(loss.detach()) * len(idx)
                seen += len(idx)
            epoch += 1
            probs_val = predict(shown, val_images, device) if len(val_images) else \
                np.empty((0, config.n_identities))
            worst, val_loss = 0.0, float("nan")
            if len(val_images):
                # an identity absent from the hold-out (its tracklets too short to hold a block
                # out, or none named at all) is not known to be learnt: it counts as 0, so the
                # rules on "every identity learnt" never fire on the identities that happen to be
                # checked (3 mice, tracklets named from pairs: one identity's images were the
                # whole hold-out, the unit stopped after 1 epoch at uniqueness 0.333)
                per = holdout_report(probs_val, val_labels, config.n_identities)["accuracy_per_identity"]
                worst = min(0.0 if value is None else value for value in per)
                picked = probs_val[np.arange(len(val_labels)), val_labels]
                val_loss = float(-np.log(np.clip(picked, 1e-7, 1)).mean())
            u = uniqueness(predict(shown, quick_images, device), quick_frames,
                           config.n_identities) if len(quick_images) else 0.0
            record = {"epoch": epoch, "loss": total / max(1, seen), "val_loss": val_loss,
                      "uniqueness": u, "worst_class_accuracy": worst,
                      "learning_rate": float(optimizer.param_groups[0]["lr"])}
            history.append(record)
            yield record
            if u > best_u:
                best_u, best_state = u, copy.deepcopy(shown.state_dict())
            if not final and u >= config.accepted_uniqueness and u >= ACCEPT_SHARE_OF_BEST * previous_best:
                reason = "uniqueness reached"
                break
            learnt = len(history) >= 2 and all(h["worst_class_accuracy"] > 0.97 for h in history[-2:])
            # one epoch with every hold-out image right is not yet a network that has learnt (the
            # hold-out lies in the same tracklets): on crowded 10 x 3000 seed 2 the initial unit
            # stopped so at uniqueness 0.779; from the third epoch on, or two epochs > 97 %, it
            # stops at 0.866 (95.63 -> 96.53 % right; the other benchmark cases unchanged)
            if learnt or (worst >= 0.99 and not final and epoch >= 3):
                # the final step starts from a network that knows every image class: two epochs
                # that keep every identity learnt on the hold-out are all it needs
                reason = "every identity learnt (validation accuracy)"
                break
            if previous_best > 0 and epoch >= 5 and best_u < previous_best ** 2:
                reason = "no better than before"
                break
            if final:
                # the annealed step runs its course: its last epochs, at a small learning rate,
                # are where it gains (zebrafish test_B: +0.03 uniqueness in its last 5 of 15)
                continue
            if previous_best > 0 and epoch >= 2 and best_u < ACCEPT_SHARE_OF_BEST ** 2 * previous_best:
                reason = f"below {ACCEPT_SHARE_OF_BEST ** 2:.2g} x the best after 2 epochs"
                break
            if previous_best > 0 and epoch >= GAIN_WINDOW and best_u < ACCEPT_SHARE_OF_BEST * previous_best:
                # new segments that pull it down (forgetting, or a wrong label): the result
                # would be discarded; on a CPU every further epoch costs 6-10 s for nothing
                reason = f"below {ACCEPT_SHARE_OF_BEST:g} x the best after {GAIN_WINDOW} epochs"
                break
            if _little_gained([h["uniqueness"] for h in history]):
                reason = f"uniqueness gained < {GAIN_SHARE:.0%} of what was left in {GAIN_WINDOW} epochs"
                break
            if epoch >= 10:
                last = [h["uniqueness"] for h in history[-6:]]
                if np.mean(np.abs(np.diff(last))) <= 0.01 / 5 and best_u >= last[-1]:
                    reason = "uniqueness plateau"
                    break
            losses = [h["val_loss"] for h in history if np.isfinite(h["val_loss"])]
            if len(losses) >= 2 and max(losses[-2:]) < NOTHING_LEFT_LOSS and \
                    all(h["worst_class_accuracy"] >= 1.0 for h in history[-2:]):
                reason = "nothing left to learn (validation loss ~0)"
                break
            if _loss_plateau(losses):
                reason = "validation loss plateau"
                break
            if _overfitting(losses, initial=previous_best == 0):
                reason = "overfitting (validation loss rising)"
                break
        model.load_state_dict(best_state)
        if len(quick_images) < len(disc_images):
            best_u = uniqueness(predict(model, disc_images, device), disc_frames, config.n_identities)
        return UnitResult(max(best_u, 0.0), epoch, history, reason)


def _batches(n: int, size: int, steps: int, generator: torch.Generator):
    """``steps`` batches of indices, walking through reshuffled passes over ``n`` images
    (the last batch of a pass is cut short, never padded with repeats)."""
    order = torch.randperm(n, generator=generator)
    k = 0
    for _ in range(steps):
        if k >= n:
            order, k = torch.randperm(n, generator=generator), 0
        idx = order[k: k + size]
        k += size
        if len(idx) < 2:  # batch norm needs two images; start the next pass
            order, k = torch.randperm(n, generator=generator), size
            idx = order[:size]
        yield idx


def _little_gained(curve: list[float]) -> bool:
    """After 2 x :data:`GAIN_WINDOW` epochs: the last window's best uniqueness is above the best
    before it by less than :data:`GAIN_SHARE` x (1 - that best)."""
    if len(curve) < 2 * GAIN_WINDOW:
        return False
    before = max(curve[:-GAIN_WINDOW])
    return max(curve[-GAIN_WINDOW:]) - before < GAIN_SHARE * (1.0 - before)


def _loss_plateau(losses: list[float]) -> bool:
    """TRex rule 5: after >= 5 epochs, the last 5 losses barely differ from the 4 before each."""
    if len(losses) < 9:
        return False
    changes = [losses[k] - np.mean(losses[k - 4: k]) for k in range(len(losses) - 5, len(losses))]
    scale = 0.05 * 10 ** (math.floor(math.log10(max(losses[-1], 1e-12))) - 1)
    return abs(float(np.mean(changes))) < scale


def _overfitting(losses: list[float], initial: bool) -> bool:
    """TRex rule 6: 4 consecutive loss increases within the last 10 epochs (initial unit: only
    after 30 epochs)."""
    if len(losses) < (30 if initial else 5):
        return False
    rising = np.diff(losses[-10:]) > 0
    run = longest = 0
    for r in rising:
        run = run + 1 if r else 0
        longest = max(longest, run)
    return longest >= 4


def mean_probabilities(probs: np.ndarray, groups: np.ndarray) -> dict[int, tuple[np.ndarray, int]]:
    """Per group (tracklet): the averaged softmax vector and the number of images."""
    out = {}
    for g in np.unique(groups):
        member = groups == g
        out[int(g)] = (probs[member].mean(axis=0), int(member.sum()))
    return out


def label_candidate(probs: np.ndarray, groups: np.ndarray, n_identities: int,
                    add_factor: float) -> tuple[dict[int, int] | None, str]:
    """TRex's ``check_additional_range``: one identity per tracklet, all distinct (one missing
    id may be repaired), each tracklet's best mean probability > add_factor / N."""
    means = mean_probabilities(probs, groups)
    tracklets = sorted(means)
    if len(tracklets) != n_identities:
        return None, "NotAllAnimals"
    matrix = np.array([means[t][0] for t in tracklets])
    ids = matrix.argmax(axis=1)
    best = matrix.max(axis=1)
    limit = add_factor / n_identities
    if len(set(ids.tolist())) == n_identities - 1 and best.min() > limit:
        missing = (set(range(n_identities)) - set(ids.tolist())).pop()
        duplicate = [i for i in set(ids.tolist()) if (ids == i).sum() > 1][0]
        rows = np.flatnonzero(ids == duplicate)
        weaker = rows[np.argmin(best[rows])]
        ids[weaker] = missing
    if len(set(ids.tolist())) != n_identities:
        return None, "NoUniqueIDs"
    if best.min() <= limit:
        return None, "ProbabilityTooLow"
    return {t: int(i) for t, i in zip(tracklets, ids)}, "accepted"
