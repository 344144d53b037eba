"""Identification without a global segment: learning from tracklet pairs.

TRex and the accumulation start from a *global segment*, a stretch where all N animals are
each inside one tracklet: its N tracklets are N different animals, so they can be labelled
0..N-1 and trained on. In groups that school or cluster such a moment may never come. The
tracklets still say two things for certain (idtracker.ai v6 learns from the same facts):

* two images of one tracklet show the same animal (a tracklet never holds two animals);
* two tracklets present in the same frame are different animals.

An *embedding* network (the identification CNN with a short output vector) is trained on such
pairs with a contrastive loss: images of one tracklet are pulled together, images of two
coexisting tracklets pushed at least :data:`MARGIN` apart (distances between unit vectors).
Pairs of tracklets that never coexist are never used: they may or may not be one animal.
Each tracklet is then the mean of its images' embeddings, and the tracklets are clustered into
N groups, starting from frames where the most tracklets coexist (they are known to differ)
and keeping the best of several starts, each tracklet weighted by its images, coexisting
tracklets kept in different groups (:func:`cluster_tracklets`). :func:`cluster_probabilities` turns the distances into
per-image probabilities, so the usual assignment (coexisting tracklets never share an identity,
the stronger claim wins) names the tracklets; its confident tracklets then train the N-class
classifier that the rest of the pipeline (uniqueness, retrack, weights, corrections) uses.

Cost stays linear in the number of tracklets: coexisting pairs come from one sort of the
tracklets by start (each tracklet overlaps at most the few that are present with it), and
training draws a fixed number of pairs per step whatever their number.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import Cancelled
from .network import TREX_LAYOUT, IdentityNetwork, fast_math, outputs, place, seeded, to_tensor
from .samples import images_within
from .training import _shift

EMBEDDING_SIZE = 16  # length of an image's embedding vector
MARGIN = 1.0  # coexisting tracklets' images are pushed at least this far apart (unit vectors: 0..2)
PAIRS_PER_STEP = 32  # positive and as many negative pairs per optimiser step
LEARNING_RATE = 1e-3  # from scratch, a contrastive loss learns well at Adam's usual rate
CHECK_EVERY = 100  # steps between two measurements of how well pairs are told apart
MAX_STEPS = 4000
MIN_STEPS = 300
SEPARATED = 0.995  # stop when this share of (same, different) comparisons is right ...
# ... or when GAIN_CHECKS checks in a row gained less than GAIN_MIN over the best before them:
# the measure on PROBE_PAIRS pairs wobbles by ~0.2 %, so two checks stopped on noise while
# learning still went on (crowded 20 x 3000: stopped at step 1500 with 98.4 % told apart and
# the 20 clusters 85.5 % pure by frames, two animals split over two clusters in halves of the
# time; on to 99.5 % at step 3200: 91.8 % pure, every animal its own cluster; end to end
# 81.98 % right with two checks, 84.55 % with five (stopped at step 2400), 89.55 % with eight)
GAIN_MIN = 0.001
GAIN_CHECKS = 8
PROBE_PAIRS = 2000  # pairs of each kind measured at every check
IMAGES_PER_TRACKLET = 40  # images of each tracklet learnt from (evenly spread over it)
VIOLATION = 4.0  # cost of two coexisting tracklets in one cluster, per image (4 = the largest d²)
TEMPERATURE = 0.05  # squared distance over which a cluster's probability falls by e
RESTARTS = 8  # clusterings started from different frames; the one of least objective is kept


def coexisting_pairs(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """``(P, 2)`` index pairs ``i < j`` of intervals ``[start, end]`` (frames) that overlap.

    After one sort by start, interval ``i`` overlaps exactly the following ones that start
    before it ends: vectorised, O(T log T + P)."""
    start, end = np.asarray(start, np.int64), np.asarray(end, np.int64)
    order = np.argsort(start, kind="stable")
    s, e = start[order], end[order]
    upto = np.searchsorted(s, e, side="right")  # the first later interval starting after i ends
    count = np.maximum(upto - np.arange(len(s)) - 1, 0)
    first = np.repeat(np.arange(len(s)), count)
    offset = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    second = first + 1 + offset
    pairs = np.stack([order[first], order[second]], axis=1)
    return np.sort(pairs, axis=1) if len(pairs) else np.empty((0, 2), np.int64)


def images_per_tracklet(n_tracklets: int, size: tuple[int, int], max_gb: float, least: int = 3) -> int:
    """How many images of each tracklet to learn from: :data:`IMAGES_PER_TRACKLET`, fewer when
    all tracklets together would exceed ``max_gb`` (counted as float32 images, like
    ``gpu_max_sample_gb`` elsewhere), never fewer than ``least``."""
    budget = images_within(max_gb, size) // max(1, n_tracklets)
    return max(least, min(IMAGES_PER_TRACKLET, budget))


def most_coexisting(start: np.ndarray, end: np.ndarray, weight: np.ndarray) -> tuple[int, np.ndarray]:
    """The frame where the most intervals are present (ties: the largest total weight) and
    the indices of those intervals: animals known to be all different."""
    if not len(end):  # no tracklet to learn from: nobody seen, nobody together
        return 0, np.empty(0, np.int64)
    candidates = _fullest_frames(start, end)
    if len(candidates) > 200:  # the total weight of each is a loop: look at a spread of them
        candidates = candidates[np.linspace(0, len(candidates) - 1, 200).round().astype(int)]
    best_frame, best_members, best_weight = int(candidates[0]), np.empty(0, np.int64), -1.0
    for f in candidates:
        members = np.flatnonzero((start <= f) & (end >= f))
        w = float(weight[members].sum())
        if w > best_weight:
            best_frame, best_members, best_weight = int(f), members, w
    return best_frame, best_members


def _fullest_frames(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """The frames where the most intervals ``[start, end]`` are present (at least one interval)."""
    present = np.zeros(int(np.max(end)) + 2, np.int64)
    np.add.at(present, start, 1)
    np.add.at(present, np.asarray(end) + 1, -1)
    present = np.cumsum(present)[:-1]
    return np.flatnonzero(present == present.max())


class _Owners:
    """Images grouped by owner (tracklet position 0..T-1), for drawing pairs quickly."""

    def __init__(self, owner: np.ndarray, n_owners: int) -> None:
        self.order = np.argsort(owner, kind="stable")
        self.count = np.bincount(owner, minlength=n_owners)
        self.offset = np.concatenate([[0], np.cumsum(self.count)[:-1]])

    def draw(self, owners: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One random image of each owner in ``owners``."""
        return self.order[self.offset[owners] + (rng.random(len(owners)) * self.count[owners]).astype(np.int64)]

    def draw_two(self, owners: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Two different images of each owner (each has at least two)."""
        c = self.count[owners]
        a = (rng.random(len(owners)) * c).astype(np.int64)
        b = (a + 1 + (rng.random(len(owners)) * (c - 1)).astype(np.int64)) % c
        return self.order[self.offset[owners] + a], self.order[self.offset[owners] + b]


def _draw_pairs(owners: _Owners, negatives: np.ndarray, k: int, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """``k`` same-tracklet pairs (tracklets drawn in proportion to their images) and ``k``
    coexisting pairs: image indices (2k,) for each side."""
    multi = np.flatnonzero(owners.count >= 2)
    p = owners.count[multi] / owners.count[multi].sum()
    same = rng.choice(multi, size=k, p=p)
    pa, pb = owners.draw_two(same, rng)
    pick = negatives[rng.integers(len(negatives), size=k)]
    na, nb = owners.draw(pick[:, 0], rng), owners.draw(pick[:, 1], rng)
    return np.concatenate([pa, na]), np.concatenate([pb, nb])


def embed(model: IdentityNetwork, images: np.ndarray, device: torch.device, batch: int = 1024) -> np.ndarray:
    """Unit-length embeddings (M, EMBEDDING_SIZE) of uint8 crops."""
    return outputs(model, images, device, lambda z: F.normalize(z, dim=1), batch)


def separation(model: IdentityNetwork, images: np.ndarray, probe: tuple[np.ndarray, np.ndarray, np.ndarray],
               device: torch.device) -> float:
    """Share of (same-tracklet pair, coexisting pair) comparisons in which the coexisting pair
    is farther apart (an AUC: 0.5 is chance, 1 every pair told apart)."""
    a, b, same = probe
    used, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    z = embed(model, images[used], device)
    za, zb = z[inverse[:len(a)]], z[inverse[len(a):]]
    d = np.linalg.norm(za - zb, axis=1)
    pos, neg = np.sort(d[same]), d[~same]
    return float(np.searchsorted(pos, neg, side="left").mean() / max(1, len(pos)))


def learning_stalled(history: list[float]) -> bool:
    """True when the last :data:`GAIN_CHECKS` measurements of separation gained less than
    :data:`GAIN_MIN` over the best one before them."""
    if len(history) <= GAIN_CHECKS:
        return False
    return max(history[-GAIN_CHECKS:]) - max(history[:-GAIN_CHECKS]) < GAIN_MIN


def train_embedding_events(images: np.ndarray, owner: np.ndarray, negatives: np.ndarray,
                           size: tuple[int, int], device: torch.device, seed: int = 0, *,
                           max_steps: int = MAX_STEPS, min_steps: int = MIN_STEPS,
                           should_stop: Callable[[], bool] | None = None
                           ) -> Generator[dict[str, Any], None, IdentityNetwork]:
    """Train an embedding on tracklet pairs; yields a record every :data:`CHECK_EVERY` steps.

    ``images`` (M, H, W) uint8; ``owner`` (M,) each image's tracklet position; ``negatives``
    (P, 2) positions of tracklets that coexist. Stops when pairs are told apart
    (:data:`SEPARATED`), when learning stalls (:func:`learning_stalled`), or at ``max_steps``;
    the best state by separation is returned."""
    owners = _Owners(owner, int(owner.max()) + 1 if len(owner) else 0)
    rng = np.random.default_rng(seed)
    with seeded(seed, device):
        generator = torch.Generator().manual_seed(seed)
        # TRex's layout: the start from tracklet pairs was measured with it, the deep one
        # was not (the network trained on the tracklets it names follows the setting)
        model = place(IdentityNetwork(EMBEDDING_SIZE, size, layout=TREX_LAYOUT), device)
        optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
        a, b = _draw_pairs(owners, negatives, PROBE_PAIRS, np.random.default_rng(seed + 1))
        probe = (a, b, np.arange(len(a)) < PROBE_PAIRS)
        shift = max(0, min(2, int(0.05 * min(size))))
        target = torch.cat([torch.ones(PAIRS_PER_STEP), torch.zeros(PAIRS_PER_STEP)]).to(device)
        precision = fast_math(device)  # decided once, entered at every step
        history: list[float] = []
        best, best_state = -1.0, None
        step = 0
        while step < max_steps:
            model.train()
            total = 0.0
            for _ in range(CHECK_EVERY):
                if should_stop is not None and should_stop():
                    raise Cancelled("training cancelled")
                ia, ib = _draw_pairs(owners, negatives, PAIRS_PER_STEP, rng)
                x = to_tensor(images[np.concatenate([ia, ib])], device)
                with precision:
                    z = F.normalize(model(_shift(x, shift, generator)).float(), dim=1)
                d2 = ((z[: len(ia)] - z[len(ia):]) ** 2).sum(dim=1)
                d = torch.sqrt(d2 + 1e-9)
                loss = (target * d2 + (1 - target) * F.relu(MARGIN - d) ** 2).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach())
            step += CHECK_EVERY
            score = separation(model, images, probe, device)
            history.append(score)
            if score > best:
                best = score
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            yield {"step": step, "loss": total / CHECK_EVERY, "separation": score, "max_steps": max_steps}
            if step >= min_steps and (score >= SEPARATED or learning_stalled(history)):
                break
        if best_state is not None:
            model.load_state_dict(best_state)
        return model


def cluster_tracklets(embedding: np.ndarray, weight: np.ndarray, n: int, start: np.ndarray,
                      end: np.ndarray, negatives: np.ndarray | None = None, iterations: int = 50,
                      restarts: int = RESTARTS) -> tuple[np.ndarray, np.ndarray]:
    """``(labels (T,), centroids (n, D))``: weighted k-means of unit tracklet embeddings, under
    the constraint that coexisting tracklets (``negatives``) belong to different clusters.

    Started from the tracklets of a frame where the most coexist (all different animals);
    the missing centroids are the tracklets farthest from those (weighted), one by one. Plain
    k-means can end with two similar animals in one cluster and another animal cut in two
    (20 animals: 3 of 20 clusters); each coexisting pair in one cluster costs
    :data:`VIOLATION` x the lighter tracklet's weight, more than any distance, so tracklets
    that cannot be one animal move apart, and an emptied cluster is restarted at the tracklet
    that fits its own cluster worst; last, neighbouring clusters are pooled and split again
    (:func:`_split_anew`), for two animals that share two clusters in turns.

    Where it ends depends on where it starts, so it starts from up to ``restarts`` frames
    spread over the video (:func:`starting_sets`) and keeps the clustering of least
    objective (:func:`_objective`). Measured on the crowd of 20 x 3000 seed 1 (embeddings of
    two pair networks, the tracklets' true animals known): from the heaviest frame alone the
    objective was 1749 / 1105 and the clusters 96.0 / 97.4 % pure by frames; the least of 8
    starts 891 / 1093, 97.9 / 97.8 % pure."""
    negatives = np.empty((0, 2), np.int64) if negatives is None else np.asarray(negatives, np.int64)
    both, bounds = _adjacency(negatives, len(embedding))
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for members in starting_sets(start, end, weight, n, restarts):
        labels, c = _cluster_from(members, embedding, weight, n, negatives, both, bounds, iterations)
        value = _objective(embedding, weight, labels, c, negatives)
        if best is None or value < best[0] - 1e-9:
            best = (value, labels, c)
    assert best is not None  # starting_sets always gives one set
    return best[1], best[2]


def starting_sets(start: np.ndarray, end: np.ndarray, weight: np.ndarray, n: int, count: int
                  ) -> list[np.ndarray]:
    """Up to ``count`` different sets of at most ``n`` tracklets (the heaviest) present together
    in a frame where the most coexist: the heaviest such frame (:func:`most_coexisting`)
    first, then frames spread evenly over the others."""
    _, members = most_coexisting(start, end, weight)
    sets = [members]
    if count > 1 and len(end):
        candidates = _fullest_frames(start, end)
        for f in candidates[np.unique(np.linspace(0, len(candidates) - 1, 4 * count).round().astype(int))]:
            sets.append(np.flatnonzero((start <= f) & (end >= f)))
    out: list[np.ndarray] = []
    seen: set[tuple[int, ...]] = set()
    for members in sets:
        members = members[np.argsort(-weight[members], kind="stable")][:n]
        key = tuple(sorted(members.tolist()))
        if key not in seen:
            seen.add(key)
            out.append(members)
        if len(out) == count:
            break
    return out


def _cluster_from(members: np.ndarray, embedding: np.ndarray, weight: np.ndarray, n: int,
                  negatives: np.ndarray, both: np.ndarray, bounds: np.ndarray, iterations: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """One clustering of :func:`cluster_tracklets`, started from the tracklets ``members``."""
    centroids = [embedding[m] for m in members]
    while len(centroids) < n:
        d2 = np.min([((embedding - c) ** 2).sum(axis=1) for c in centroids], axis=0)
        centroids.append(embedding[int(np.argmax(d2 * weight))])
    c = np.array(centroids, np.float64)
    labels = np.full(len(embedding), -1, np.int64)
    for _ in range(iterations):
        new = _squared_distances(embedding, c).argmin(axis=1)
        if (new == labels).all():
            break
        labels = new
        c = _centroids(embedding, weight, labels, c)
    if not len(negatives):
        return labels, c
    # constrained refinement, then merge-and-split moves while they lower the objective
    labels, c = _constrained(embedding, weight, labels, c, both, bounds, iterations)
    best = _objective(embedding, weight, labels, c, negatives)
    for _ in range(n):
        moved = _merge_and_split(embedding, weight, labels, c, negatives)
        if moved is None:
            break
        trial_labels, trial_c = _constrained(embedding, weight, *moved, both, bounds, iterations)
        value = _objective(embedding, weight, trial_labels, trial_c, negatives)
        if value >= best:
            break
        labels, c, best = trial_labels, trial_c, value
    return _split_anew(embedding, weight, labels, c, negatives, iterations)


def _adjacency(negatives: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Each coexisting pair in both directions, sorted by the first: tracklet i's partners are
    ``both[bounds[i]: bounds[i + 1], 1]``."""
    both = np.concatenate([negatives, negatives[:, ::-1]])
    both = both[np.argsort(both[:, 0], kind="stable")]
    return both, np.searchsorted(both[:, 0], np.arange(size + 1))


def _constrained(embedding: np.ndarray, weight: np.ndarray, labels: np.ndarray, c: np.ndarray,
                 both: np.ndarray, bounds: np.ndarray, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Each tracklet in turn (heaviest first) takes the cluster of least weighted distance plus
    :data:`VIOLATION` for each coexisting tracklet already in it; an emptied cluster restarts at
    the tracklet that fits its own cluster worst."""
    labels, n = labels.copy(), len(c)
    order = np.argsort(-weight, kind="stable")
    restarts = 0
    for _ in range(iterations):
        cost = weight[:, None] * _squared_distances(embedding, c)
        changed = 0
        for i in order:
            others = both[bounds[i]: bounds[i + 1], 1]
            penalty = np.zeros(n)
            np.add.at(penalty, labels[others], VIOLATION * np.minimum(weight[i], weight[others]))
            k = int(np.argmin(cost[i] + penalty))
            if k != labels[i]:
                labels[i] = k
                changed += 1
        c = _centroids(embedding, weight, labels, c)
        empty = np.flatnonzero(np.bincount(labels, minlength=n) == 0)
        if len(empty) and restarts < n:
            misfit = weight * _squared_distances(embedding, c)[np.arange(len(labels)), labels]
            for k in empty:
                worst = int(np.argmax(misfit))
                labels[worst], misfit[worst] = k, -1.0
                c[k] = embedding[worst]
                restarts += 1
            continue
        if not changed:
            break
    return labels, c


def _objective(embedding: np.ndarray, weight: np.ndarray, labels: np.ndarray, c: np.ndarray,
               negatives: np.ndarray) -> float:
    """Weighted distances to the own centroid plus the penalties of coexisting pairs in one cluster."""
    inertia = float((weight * _squared_distances(embedding, c)[np.arange(len(labels)), labels]).sum())
    a, b = negatives[:, 0], negatives[:, 1]
    same = labels[a] == labels[b]
    return inertia + float((VIOLATION * np.minimum(weight[a], weight[b]))[same].sum())


def _merge_and_split(embedding: np.ndarray, weight: np.ndarray, labels: np.ndarray, c: np.ndarray,
                     negatives: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Where one cluster holds coexisting tracklets (two animals) while two clusters never
    coexist (one animal cut in two): merge those two and start the freed cluster at the
    heaviest violating tracklet. None when there is nothing to do."""
    n = len(c)
    a, b = labels[negatives[:, 0]], labels[negatives[:, 1]]
    penalty = VIOLATION * np.minimum(weight[negatives[:, 0]], weight[negatives[:, 1]])
    inside = np.bincount(a[a == b], weights=penalty[a == b], minlength=n)
    if inside.max() <= 0:
        return None
    together = np.zeros((n, n), bool)
    together[a, b] = together[b, a] = True
    best, pair = np.inf, None
    for i in range(n):
        for j in range(i + 1, n):
            if together[i, j]:
                continue
            mine = (labels == i) | (labels == j)
            m = (embedding[mine] * weight[mine, None]).sum(axis=0)
            m /= max(np.linalg.norm(m), 1e-9)
            cost = float((weight[mine] * np.maximum(2.0 - 2.0 * embedding[mine] @ m, 0.0)).sum())
            if cost < best:
                best, pair = cost, (i, j)
    if pair is None:
        return None
    labels, c = labels.copy(), c.copy()
    labels[labels == pair[1]] = pair[0]
    c = _centroids(embedding, weight, labels, c)
    worst = int(np.argmax(inside))
    violating = np.zeros(len(labels))
    same = (a == b) & (a == worst)
    np.add.at(violating, negatives[same, 0], penalty[same])
    np.add.at(violating, negatives[same, 1], penalty[same])
    start = int(np.argmax(violating))
    labels[start], c[pair[1]] = pair[1], embedding[start]
    return labels, c


def _split_anew(embedding: np.ndarray, weight: np.ndarray, labels: np.ndarray, c: np.ndarray,
                negatives: np.ndarray, iterations: int, neighbours: int = 3
                ) -> tuple[np.ndarray, np.ndarray]:
    """Two neighbouring clusters pooled and split again along their pool's main direction,
    kept where that lowers the objective, until no pair of clusters gains.

    The moves above mend a cluster holding two coexisting animals, but not two clusters that
    each hold animal A in some stretches of the video and animal B in the others: nothing
    coexists inside either, so no constraint is broken, and k-means cannot leave that state
    one tracklet at a time. Measured on the crowd of 20 x 3000 seed 1 (its embedding of the
    session-40 crops): two animals shared two clusters in alternating stretches (clusters
    0.018 apart in squared distance, against 0.17 between the two animals), 19 of 20 animals
    named, 94.3 % right end to end; pooled and split anew, 20 of 20 and the clusters 96.0 %
    pure by frames (92.4 % before). Such clusters lie close together, so each cluster is
    pooled with its ``neighbours`` nearest: at most 3n pairs a round, each refined on its two
    clusters' tracklets after one pass over all tracklets and coexisting pairs to pick them out
    (100 animals x 5000 tracklets: 7.7 s for the whole clustering with its restarts, against
    minutes for the pair network)."""
    n = len(c)
    labels, c = labels.copy(), c.copy()
    for _ in range(n):
        gained = False
        d2 = _squared_distances(c, c)
        np.fill_diagonal(d2, np.inf)
        near = {(min(i, int(j)), max(i, int(j))) for i in range(n) for j in np.argsort(d2[i])[:neighbours]}
        for i, j in sorted(near, key=lambda pair: d2[pair]):
            pool = np.flatnonzero((labels == i) | (labels == j))
            if len(pool) < 2:
                continue
            local = np.full(len(embedding), -1, np.int64)
            local[pool] = np.arange(len(pool))
            inside = negatives[(local[negatives[:, 0]] >= 0) & (local[negatives[:, 1]] >= 0)]
            inside = local[inside].reshape(-1, 2)
            z, w = embedding[pool], weight[pool]
            now_labels, now_c = (labels[pool] == j).astype(np.int64), c[[i, j]]
            now = _objective(z, w, now_labels, now_c, inside)
            centre = (z * w[:, None]).sum(axis=0) / w.sum()
            direction = np.linalg.svd((z - centre) * np.sqrt(w)[:, None], full_matrices=False)[2][0]
            side = ((z - centre) @ direction > 0).astype(np.int64)
            both, bounds = _adjacency(inside, len(pool))
            trial_labels, trial_c = _constrained(z, w, side, _centroids(z, w, side, now_c), both, bounds,
                                                 iterations)
            if _objective(z, w, trial_labels, trial_c, inside) < now - 1e-9:
                labels[pool] = np.where(trial_labels == 1, j, i)
                c[[i, j]] = trial_c
                gained = True
        if not gained:
            break
    return labels, c


def _centroids(embedding: np.ndarray, weight: np.ndarray, labels: np.ndarray, previous: np.ndarray
               ) -> np.ndarray:
    """Unit weighted mean of each cluster (an empty one keeps its previous centroid)."""
    c = previous.copy()
    for k in range(len(c)):
        mine = labels == k
        if mine.any():
            m = (embedding[mine] * weight[mine, None]).sum(axis=0)
            c[k] = m / max(np.linalg.norm(m), 1e-9)
    return c


def _squared_distances(z: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(M, K) squared distances of unit vectors to unit centroids: 2 - 2 z.c, without the
    (M, K, D) array of differences (thousands of tracklets x 100 animals)."""
    return np.maximum(2.0 - 2.0 * (z @ centroids.T), 0.0)


def tracklet_means(z: np.ndarray, owner: np.ndarray, n_owners: int) -> np.ndarray:
    """Unit-length mean embedding of each owner's images."""
    sums = np.zeros((n_owners, z.shape[1]))
    np.add.at(sums, owner, z)
    return sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-9)


def cluster_probabilities(z: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Per image, a probability for each cluster: softmax of minus the squared distance to
    its centroid over :data:`TEMPERATURE` (close to one centroid and far from the others:
    confident; between two: ambiguous, as the assignment expects)."""
    d2 = _squared_distances(z, centroids)
    logits = -(d2 - d2.min(axis=1, keepdims=True)) / TEMPERATURE
    p = np.exp(logits)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
