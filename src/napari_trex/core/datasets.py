"""Synthetic top-down videos of several animals, with ground truth.

This is the data of most tests and benchmarks (a user's clone has no real recordings), so
it is built to make identification genuinely hard in the ways real recordings are:

* all animals have the same shape and (nearly) the same size and darkness; what tells them
  apart is a subtle, stable pattern of lighter spots on the body (an individual "code"
  of spots at fixed body positions), so identity can only be told by appearance;
* bodies are elongated, wider at the head, bend slightly while swimming, and point along
  their heading, so orientation and head/tail can be learnt from the image and the motion;
* motion is a correlated random walk (speed and turning rate are Ornstein-Uhlenbeck
  processes) in a circular arena; animals cross and touch often (in about a third of the
  frames of 8 animals two of them touch; overlapping animals merge into one blob, as in
  real videos), and ``cohesion`` pulls them into a school for harder cases;
* the light drifts slowly, the background has texture and the camera adds noise.

That *simple* mode is quick and still what the small tests use. It flatters a tracker, though:
every animal keeps its size, never stops and never lingers beside another. The *realistic*
mode (``realistic=True``) adds what real recordings have and what breaks trackers tuned to the
simple mode:

* body area that changes by about ±30 % within an animal (posture, wings that open and close);
* thin legs that touch the threshold, so they come and go and sometimes break off as fragments;
* animals of visibly different sizes (up to about 1.5× in length);
* resting for seconds (one animal of each video is a sleeper, so the background must not
  swallow it), and contacts that last seconds (an animal seeks another and both stay touching);
* uneven lighting (vignetting and a tilt), light flicker, sensor noise that grows with
  brightness, and specks.

Ground truth is one row per animal and frame: ``frame, identity, x, y, angle, contact`` where
``(x, y)`` is the centre of mass of the drawn body (pixels, x to the right, y down), ``angle``
the heading in radians (``atan2(dy, dx)`` in image coordinates, head direction) and
``contact`` 1 where the animal's silhouette (legs included) touches another one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .io import atomic_write_text

GROUND_TRUTH_COLUMNS = ("frame", "identity", "x", "y", "angle", "contact")


@dataclass
class SyntheticVideo:
    """Frames ``(T, H, W)`` uint8 and the ground truth that generated them."""

    frames: np.ndarray
    ground_truth: dict[str, np.ndarray]  # columns of GROUND_TRUTH_COLUMNS, T*N rows
    fps: float
    background: np.ndarray  # the static background (float32, without drift or noise)
    n_individuals: int
    body_length: float
    polarity: str
    seed: int
    codes: np.ndarray = field(repr=False)  # (N, n_spots) 0/1 spot pattern of each animal
    realistic: bool = False
    sizes: np.ndarray | None = field(default=None, repr=False)  # (N,) body length per animal, px
    resting: np.ndarray | None = field(default=None, repr=False)  # (T, N) the animal rests

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    def positions(self) -> np.ndarray:
        """``(T, N, 2)`` array of x, y per frame and identity."""
        gt = self.ground_truth
        out = np.empty((self.n_frames, self.n_individuals, 2))
        out[gt["frame"], gt["identity"], 0] = gt["x"]
        out[gt["frame"], gt["identity"], 1] = gt["y"]
        return out

    def contact(self) -> np.ndarray:
        """``(T, N)`` bool: the animal touches another one in that frame."""
        gt = self.ground_truth
        out = np.zeros((self.n_frames, self.n_individuals), bool)
        out[gt["frame"], gt["identity"]] = gt["contact"].astype(bool)
        return out

    def write_ground_truth(self, path: str | os.PathLike) -> Path:
        """CSV ``frame,identity,x,y,angle,contact`` (atomically)."""
        gt = self.ground_truth
        lines = [",".join(GROUND_TRUTH_COLUMNS)]
        lines += [f"{f},{i},{x:.3f},{y:.3f},{a:.5f},{int(c)}"
                  for f, i, x, y, a, c in zip(gt["frame"], gt["identity"], gt["x"], gt["y"],
                                              gt["angle"], gt["contact"])]
        atomic_write_text(path, "\n".join(lines) + "\n")
        return Path(path)

    def write(self, path: str | os.PathLike, keyframe_interval: int = 250) -> tuple[Path, Path]:
        """Encode the video (codec by extension) and write ``<stem>_ground_truth.csv`` beside it."""
        from .video import write_video

        video = write_video(path, self.frames, self.fps, keyframe_interval=keyframe_interval)
        truth = self.write_ground_truth(video.with_name(f"{video.stem}_ground_truth.csv"))
        return video, truth


def _spot_codes(n: int, n_spots: int, rng: np.random.Generator) -> np.ndarray:
    """Distinct binary spot patterns, pairwise Hamming distance >= 2 where possible."""
    candidates = [np.array([(c >> b) & 1 for b in range(n_spots)]) for c in range(1, 2 ** n_spots)]
    candidates = [c for c in candidates if 2 <= c.sum() <= n_spots - 1] or candidates
    order = rng.permutation(len(candidates))
    chosen: list[np.ndarray] = []
    for min_distance in (2, 1):
        for k in order:
            code = candidates[k]
            if all(np.abs(code - c).sum() >= min_distance for c in chosen) and \
                    not any(np.array_equal(code, c) for c in chosen):
                chosen.append(code)
            if len(chosen) == n:
                return np.asarray(chosen)
    raise ValueError(f"cannot make {n} distinct patterns from {n_spots} spots")


def _background(size: int, polarity: str, rng: np.random.Generator, arena_radius: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = (size - 1) / 2
    r = np.hypot(xx - c, yy - c) / (size / 2)
    texture = gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), 3) * 12
    gradient = 6 * (xx / size - 0.5) + 4 * (yy / size - 0.5)
    if polarity == "dark_on_light":
        bg = 205 - 12 * r ** 2 + gradient + texture
        wall = -45
    else:
        bg = 45 + 8 * r ** 2 + gradient + texture
        wall = 35
    ring = np.exp(-(((np.hypot(xx - c, yy - c) - arena_radius - 6) / 2.5) ** 2))
    return (bg + wall * ring).astype(np.float32)


def generate(
    n_individuals: int = 4,
    n_frames: int = 500,
    size: int = 512,
    seed: int = 0,
    fps: float = 25.0,
    body_length: float = 28.0,
    polarity: Literal["dark_on_light", "light_on_dark"] = "dark_on_light",
    contrast: float = 90.0,
    pattern_contrast: float = 0.3,
    noise: float = 2.5,
    mean_speed: float = 2.0,
    cohesion: float = 0.0,
    illumination_drift: float = 0.02,
    realistic: bool = False,
    sociality: float = 0.15,
) -> SyntheticVideo:
    """Generate a seeded synthetic recording (same arguments → the same frames, bit for bit).

    ``body_length`` in px; ``mean_speed`` in body lengths per second; ``pattern_contrast``
    is how much lighter an individual's spots are than the rest of the body (0.3 = 30 %
    of the body's darkness); ``cohesion`` pulls animals towards the group (more crossings);
    ``illumination_drift`` is the amplitude of the slow light change (fraction).
    ``sociality`` (realistic mode): the share of bouts of moving that end with the animal seeking
    another one and both resting in contact for 1-3 s; groups at 0.6 or more touch so often
    that no moment shows every animal apart.
    ``realistic`` adds posture, legs, sizes, resting, long contacts, uneven light, flicker
    and brighter-is-noisier sensor noise (see the module docstring); ``body_length`` is then
    the median animal's length.
    """
    if n_individuals < 1 or n_frames < 1:
        raise ValueError("need at least one animal and one frame")
    if size % 2 or size < 64:
        raise ValueError("size must be even and at least 64 px")
    if polarity not in ("dark_on_light", "light_on_dark"):
        raise ValueError("polarity must be 'dark_on_light' or 'light_on_dark'")
    if realistic:
        return _generate_realistic(n_individuals, n_frames, size, seed, fps, body_length, polarity,
                                   contrast, pattern_contrast, noise, mean_speed, cohesion, sociality)
    rng = np.random.default_rng(seed)
    dt = 1.0 / fps
    n = n_individuals
    half_len = body_length / 2
    half_width = body_length * 0.16
    arena_radius = size * 0.45
    centre = np.array([(size - 1) / 2, (size - 1) / 2])

    # --- individuals: a stable spot code and a tiny size difference (not enough to identify)
    spot_u = np.array([0.45, 0.1, -0.25, -0.55, 0.45, 0.1, -0.25, -0.55])  # along body, +1 = head
    spot_v = np.array([0.45, 0.45, 0.45, 0.45, -0.45, -0.45, -0.45, -0.45])  # across, ±1 = edge
    n_spots = 8 if n > 6 else 6
    spot_u, spot_v = spot_u[:n_spots] if n_spots == 8 else spot_u[[0, 1, 2, 4, 5, 6]], \
        spot_v[:n_spots] if n_spots == 8 else spot_v[[0, 1, 2, 4, 5, 6]]
    codes = _spot_codes(n, n_spots, rng)
    scale = 1 + rng.uniform(-0.03, 0.03, n)
    darkness = contrast * (1 + rng.uniform(-0.02, 0.02, n))

    # --- trajectories: correlated random walk with walls and a pull to the group ---------------
    pos = np.empty((n_frames, n, 2))
    heading = np.empty((n_frames, n))
    phase = np.empty((n_frames, n))
    start_r = arena_radius * 0.7 * np.sqrt(rng.uniform(0, 1, n))
    start_a = rng.uniform(0, 2 * np.pi, n)
    p = centre + np.c_[start_r * np.cos(start_a), start_r * np.sin(start_a)]
    theta = rng.uniform(-np.pi, np.pi, n)
    speed = np.full(n, mean_speed * body_length)
    omega = np.zeros(n)
    ph = rng.uniform(0, 2 * np.pi, n)
    mu_speed = mean_speed * body_length * rng.uniform(0.8, 1.2, n)
    for t in range(n_frames):
        pos[t], heading[t], phase[t] = p, theta, ph
        # speed and turning: Ornstein-Uhlenbeck; occasionally animals pause
        speed += 1.5 * (mu_speed - speed) * dt + 0.9 * mu_speed * np.sqrt(dt) * rng.standard_normal(n)
        speed = np.clip(speed, 0.0, 3.0 * mu_speed)
        omega += -3.0 * omega * dt + 5.0 * np.sqrt(dt) * rng.standard_normal(n)
        # steer towards the group (crossings) and away from the wall
        to_group = p.mean(axis=0) - p
        steer = cohesion * _angle_diff(np.arctan2(to_group[:, 1], to_group[:, 0]), theta)
        rel = p - centre
        dist = np.hypot(rel[:, 0], rel[:, 1])
        near_wall = np.clip((dist - 0.75 * arena_radius) / (0.25 * arena_radius), 0, 1)
        inward = np.arctan2(-rel[:, 1], -rel[:, 0])
        steer += 6.0 * near_wall * _angle_diff(inward, theta)
        theta = _wrap(theta + (omega + steer) * dt)
        step = speed * dt
        p = p + np.c_[np.cos(theta), np.sin(theta)] * step[:, None]
        # hard wall: stay inside the arena
        rel = p - centre
        dist = np.hypot(rel[:, 0], rel[:, 1])
        limit = arena_radius - half_len
        outside = dist > limit
        if outside.any():
            p[outside] = centre + rel[outside] * (limit / dist[outside])[:, None]
            theta[outside] = _wrap(inward[outside] + rng.uniform(-0.8, 0.8, outside.sum()))
        ph = ph + dt * (4.0 + 0.15 * step * fps / body_length * 2 * np.pi)

    # --- rendering ------------------------------------------------------------------------------
    background = _background(size, polarity, rng, arena_radius)
    sign = -1.0 if polarity == "dark_on_light" else 1.0
    patch = int(np.ceil(half_len * 1.15 * scale.max())) + 3
    offs = np.arange(-patch, patch + 1, dtype=np.float32)
    centroid_shift = _template_centroid(half_len, half_width)
    frames = np.empty((n_frames, size, size), dtype=np.uint8)
    drift_period = rng.uniform(30, 60)  # seconds
    spot_sigma = 0.22
    frame_rng = np.random.default_rng(rng.integers(2**63))
    contact = np.zeros((n_frames, n), bool)
    for t in range(n_frames):
        illum = 1 + illumination_drift * np.sin(2 * np.pi * t * dt / drift_period)
        body = np.zeros((size, size), dtype=np.float32)
        touching = _Touching(size)
        for i in range(n):
            cx, cy = pos[t, i]
            ix, iy = int(round(cx)), int(round(cy))
            ys, xs = iy + offs, ix + offs
            gx, gy = np.meshgrid(xs - cx, ys - cy)
            c, s = np.cos(heading[t, i]), np.sin(heading[t, i])
            u_px = gx * c + gy * s + centroid_shift  # along the body, towards the head
            v_px = -gx * s + gy * c
            L, W = half_len * scale[i], half_width * scale[i]
            value = _body(u_px, v_px, L, W, 0.18, phase[t, i], darkness[i], codes[i], spot_u, spot_v,
                          pattern_contrast, spot_sigma)
            y0, x0 = iy - patch, ix - patch
            sy = slice(max(0, y0), min(size, y0 + 2 * patch + 1))
            sx = slice(max(0, x0), min(size, x0 + 2 * patch + 1))
            sub = value[sy.start - y0: sy.stop - y0, sx.start - x0: sx.stop - x0]
            np.maximum(body[sy, sx], sub, out=body[sy, sx])
            touching.add(i, sy, sx, sub > 0.05 * darkness[i])
        contact[t] = touching.of(n)
        image = background * illum + sign * body
        image += frame_rng.standard_normal((size, size), dtype=np.float32) * noise
        np.clip(image, 0, 255, out=image)
        frames[t] = image.astype(np.uint8)

    truth = _truth(pos, heading, contact)
    return SyntheticVideo(frames=frames, ground_truth=truth, fps=fps, background=background,
                          n_individuals=n, body_length=body_length, polarity=polarity, seed=seed,
                          codes=codes)


def _body(u_px: np.ndarray, v_px: np.ndarray, L: float, W: float, bend_amplitude: float,
          phase: float, darkness: float, code: np.ndarray, spot_u: np.ndarray, spot_v: np.ndarray,
          pattern_contrast: float, spot_sigma: float) -> np.ndarray:
    """How dark the body is at body coordinates (u along it to the head, v across, px): an
    elongated outline wider at the head, the tail half bending with the swimming ``phase``,
    anti-aliased, with the individual's lighter spots (``code``)."""
    u = u_px / L
    # the tail half bends sideways with the swimming phase
    bend = bend_amplitude * W * np.sin(phase + 2.5 * u) * np.clip((1 - u) / 2, 0, 1) ** 1.5
    w_u = W * np.sqrt(np.clip(1 - u ** 2, 0, 1)) * (1 + 0.3 * u)
    v_off = v_px - bend
    # anti-aliased edge: distance (px) to the outline across and along the body
    inside = np.clip(np.minimum(w_u - np.abs(v_off), (1 - np.abs(u)) * L) + 0.5, 0, 1)
    v_rel = v_off / np.maximum(w_u, 1e-3)
    spots = np.zeros_like(u)
    for k in np.flatnonzero(code):
        spots += np.exp(-((u - spot_u[k]) ** 2 + (v_rel - spot_v[k]) ** 2 * 0.35) / (2 * spot_sigma ** 2))
    return darkness * inside * (1 - pattern_contrast * np.clip(spots, 0, 1))


def _truth(pos: np.ndarray, heading: np.ndarray, contact: np.ndarray) -> dict[str, np.ndarray]:
    n_frames, n = heading.shape
    return {
        "frame": np.repeat(np.arange(n_frames), n),
        "identity": np.tile(np.arange(n), n_frames),
        "x": pos[:, :, 0].ravel(),
        "y": pos[:, :, 1].ravel(),
        "angle": heading.ravel(),
        "contact": contact.ravel().astype(np.int8),
    }


class _Touching:
    """Which animals' silhouettes touch in one frame: each silhouette, grown by one pixel,
    is painted into an owner map; a pixel already owned by another animal is a contact."""

    def __init__(self, size: int) -> None:
        self.owner = np.full((size, size), -1, np.int16)
        self.pairs: set[tuple[int, int]] = set()

    def add(self, animal: int, sy: slice, sx: slice, silhouette: np.ndarray) -> None:
        from scipy.ndimage import binary_dilation

        grown = binary_dilation(silhouette, iterations=1)
        region = self.owner[sy, sx]
        others = np.unique(region[grown & (region >= 0)])
        self.pairs.update((int(o), animal) for o in others if o != animal)
        region[grown & (region < 0)] = animal

    def of(self, n: int) -> np.ndarray:
        out = np.zeros(n, bool)
        for a, b in self.pairs:
            out[a] = out[b] = True
        return out


# -- the realistic mode ----------------------------------------------------------------------------

MOVING, RESTING, SEEKING = 0, 1, 2


def _generate_realistic(n: int, n_frames: int, size: int, seed: int, fps: float, body_length: float,
                        polarity: str, contrast: float, pattern_contrast: float, noise: float,
                        mean_speed: float, cohesion: float, sociality: float = 0.15) -> SyntheticVideo:
    """Animals that change shape, rest, linger in contact, under uneven flickering light."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    dt = 1.0 / fps
    arena_radius = size * 0.45
    centre = np.array([(size - 1) / 2, (size - 1) / 2])
    n_spots = 8 if n > 6 else 6
    spot_u = np.array([0.45, 0.1, -0.25, -0.55, 0.45, 0.1, -0.25, -0.55])
    spot_v = np.array([0.45, 0.45, 0.45, 0.45, -0.45, -0.45, -0.45, -0.45])
    if n_spots == 6:
        spot_u, spot_v = spot_u[[0, 1, 2, 4, 5, 6]], spot_v[[0, 1, 2, 4, 5, 6]]
    codes = _spot_codes(n, n_spots, rng) if n <= 2 ** n_spots - 2 else _spot_codes(n, 10, rng)
    if codes.shape[1] > len(spot_u):  # large groups: two more spots along the midline
        spot_u = np.concatenate([spot_u, [0.25, -0.4]])
        spot_v = np.concatenate([spot_v, [0.0, 0.0]])
    # sizes differ visibly: lengths spread evenly over 0.8x..1.2x of the median (areas up to
    # 2.25x apart), in random order
    scale = rng.permutation(np.linspace(0.8, 1.2, n)) if n > 1 else np.ones(1)
    darkness = contrast * rng.uniform(0.9, 1.1, n)
    half_len = body_length / 2 * scale
    half_width = body_length * 0.16 * scale
    mu_speed = mean_speed * body_length * rng.uniform(0.7, 1.3, n)
    sleeper = int(rng.integers(n))  # rests most of the time: the background must not swallow it

    # --- behaviour: moving, resting (seconds), seeking another animal and lingering beside it ---
    pos = np.empty((n_frames, n, 2))
    heading = np.empty((n_frames, n))
    phase = np.empty((n_frames, n))
    width_factor = np.empty((n_frames, n))
    wing_open = np.empty((n_frames, n))
    moving = np.empty((n_frames, n), bool)
    # animals walk on a surface: they touch, but one never walks through another
    min_distance = 0.6 * (half_len[:, None] + half_len[None, :])
    np.fill_diagonal(min_distance, 0.0)
    p = np.empty((n, 2))
    for i in range(n):
        for _ in range(1000):
            r, a = arena_radius * 0.7 * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
            p[i] = centre + [r * np.cos(a), r * np.sin(a)]
            if i == 0 or (np.hypot(*(p[:i] - p[i]).T) > 1.2 * min_distance[i, :i]).all():
                break
    theta = rng.uniform(-np.pi, np.pi, n)
    speed = mu_speed.copy()
    omega = np.zeros(n)
    ph = rng.uniform(0, 2 * np.pi, n)
    state = np.full(n, MOVING)
    timer = rng.exponential(4.0, n)
    partner = np.full(n, -1)
    width_state = np.zeros(n)  # posture: an OU process around 0, scaled to about ±25 % of width
    wing = np.zeros(n)  # 0 folded .. 1 fully spread
    wing_target = np.zeros(n)
    contact_distance = 0.75 * (half_len[:, None] + half_len[None, :])  # bodies touch, not overlap
    for t in range(n_frames):
        pos[t], heading[t], phase[t] = p, theta, ph
        width_factor[t] = 1 + 0.25 * np.tanh(width_state)
        wing_open[t] = wing
        moving[t] = state != RESTING
        timer -= dt
        for i in range(n):
            if timer[i] > 0 and not (state[i] == SEEKING and
                                     np.hypot(*(p[partner[i]] - p[i])) < contact_distance[i, partner[i]]):
                continue
            if state[i] == SEEKING and timer[i] > 0:  # arrived: both linger in contact
                j = partner[i]
                stay = rng.uniform(1.0, 3.0)
                state[[i, j]] = RESTING
                timer[[i, j]] = stay
                speed[[i, j]] = 0.0
                partner[j] = -1
            elif state[i] == RESTING or state[i] == SEEKING:
                state[i] = MOVING
                timer[i] = rng.exponential(5.0) + 0.5
            else:  # end of a bout of moving: rest, or go and find another animal
                if n > 1 and rng.uniform() < sociality:
                    state[i] = SEEKING
                    partner[i] = int(rng.choice([j for j in range(n) if j != i]))
                    timer[i] = 6.0
                else:
                    state[i] = RESTING
                    timer[i] = (rng.exponential(3.0) + 1.0) * (4.0 if i == sleeper else 1.0)
        target_speed = np.where(state == RESTING, 0.0, np.where(state == SEEKING, 1.3, 1.0) * mu_speed)
        speed += 3.0 * (target_speed - speed) * dt + \
            np.where(state == RESTING, 0.0, 0.6 * mu_speed * np.sqrt(dt)) * rng.standard_normal(n)
        speed = np.clip(speed, 0.0, 3.0 * mu_speed)
        speed[state == RESTING] *= np.exp(-8 * dt)
        omega += -3.0 * omega * dt + 5.0 * np.sqrt(dt) * rng.standard_normal(n)
        omega[state == RESTING] *= 0.5
        steer = np.zeros(n)
        if cohesion:
            to_group = p.mean(axis=0) - p
            steer += cohesion * _angle_diff(np.arctan2(to_group[:, 1], to_group[:, 0]), theta)
        seeking = np.flatnonzero(state == SEEKING)
        if len(seeking):
            to_partner = p[partner[seeking]] - p[seeking]
            steer[seeking] += 4.0 * _angle_diff(np.arctan2(to_partner[:, 1], to_partner[:, 0]),
                                                theta[seeking])
        rel = p - centre
        dist = np.hypot(rel[:, 0], rel[:, 1])
        near_wall = np.clip((dist - 0.75 * arena_radius) / (0.25 * arena_radius), 0, 1)
        inward = np.arctan2(-rel[:, 1], -rel[:, 0])
        steer += 6.0 * near_wall * _angle_diff(inward, theta)
        turning = np.where(state == RESTING, 0.2, 1.0) * (omega + steer)
        theta = _wrap(theta + turning * dt)
        step = speed * dt
        proposed = p + np.c_[np.cos(theta), np.sin(theta)] * step[:, None]
        proposed[state == RESTING] += rng.normal(0, 0.05, (int((state == RESTING).sum()), 2))
        gap = np.hypot(*(proposed[:, None] - proposed[None, :]).transpose(2, 0, 1))
        np.fill_diagonal(gap, np.inf)
        closer = gap < np.minimum(min_distance, np.hypot(*(p[:, None] - p[None, :]).transpose(2, 0, 1)))
        blocked = closer.any(axis=1)  # would walk into another animal: stop and turn away
        p = np.where(blocked[:, None], p, proposed)
        speed[blocked] *= 0.3
        theta[blocked] = _wrap(theta[blocked] + rng.choice([-1.0, 1.0], blocked.sum())
                               * rng.uniform(0.5, 1.5, blocked.sum()))
        rel = p - centre
        dist = np.hypot(rel[:, 0], rel[:, 1])
        limit = arena_radius - half_len
        outside = dist > limit
        if outside.any():
            p[outside] = centre + rel[outside] * (limit[outside] / dist[outside])[:, None]
            theta[outside] = _wrap(inward[outside] + rng.uniform(-0.8, 0.8, outside.sum()))
        ph = ph + np.where(state == RESTING, 0.0, dt * (4.0 + 0.15 * step * fps / body_length * 2 * np.pi))
        width_state += -0.5 * width_state * dt + 0.8 * np.sqrt(dt) * rng.standard_normal(n)
        spread = rng.uniform(size=n) < dt / 3.0  # about every 3 s an animal spreads its wings
        wing_target[spread] = rng.uniform(0.6, 1.0, spread.sum())
        wing_target[(wing_target > 0) & (rng.uniform(size=n) < dt / 1.0)] = 0.0  # ... for ~1 s
        wing += 6.0 * (wing_target - wing) * dt

    # --- light: a vignette and a tilt, flicker; noise that grows with brightness, specks -------
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r2 = ((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (size / 2) ** 2 / 2
    tilt = rng.uniform(-1, 1, 2)
    light = (1 - 0.3 * r2 + 0.12 * (tilt[0] * (xx / size - 0.5) + tilt[1] * (yy / size - 0.5))
             ).astype(np.float32)
    reflectance = _background(size, polarity, rng, arena_radius)
    dust = gaussian_filter((rng.uniform(size=(size, size)) > 0.9995).astype(np.float32), 0.8) * 400
    reflectance = reflectance - np.clip(dust, 0, 60) * (1 if polarity == "dark_on_light" else -1)
    background = reflectance * light
    sign = -1.0 if polarity == "dark_on_light" else 1.0
    flicker_hz = rng.uniform(2.0, 7.0)

    # --- rendering --------------------------------------------------------------------------------
    leg_u = np.array([0.35, 0.0, -0.3])  # where the legs leave the body, along it
    leg_angle = np.array([0.7, 1.57, 2.3])  # from the heading: forward, sideways, backward
    patch = int(np.ceil(half_len.max() * 1.9)) + 3
    offs = np.arange(-patch, patch + 1, dtype=np.float32)
    gx, gy = np.meshgrid(offs, offs)
    frames = np.empty((n_frames, size, size), dtype=np.uint8)
    contact = np.zeros((n_frames, n), bool)
    frame_rng = np.random.default_rng(rng.integers(2**63))
    spot_sigma = 0.22
    centroid_shift = _template_centroid(1.0, 0.32)  # per unit half length
    for t in range(n_frames):
        flicker = 1 + 0.02 * np.sin(2 * np.pi * flicker_hz * t * dt) + 0.008 * frame_rng.standard_normal()
        body = np.zeros((size, size), dtype=np.float32)
        touching = _Touching(size)
        for i in range(n):
            cx, cy = pos[t, i]
            ix, iy = int(round(cx)), int(round(cy))
            c, s = np.cos(heading[t, i]), np.sin(heading[t, i])
            dx, dy = gx + (ix - cx), gy + (iy - cy)
            L, W = half_len[i], half_width[i] * width_factor[t, i]
            u_px = dx * c + dy * s + centroid_shift * L
            v_px = -dx * s + dy * c
            value = _body(u_px, v_px, L, W, 0.2, phase[t, i], darkness[i], codes[i], spot_u, spot_v,
                          pattern_contrast, spot_sigma)
            # wings: two paler ellipses from the thorax backwards, folded over the body at rest
            spread = 0.12 + 0.9 * wing_open[t, i]
            for side in (-1.0, 1.0):
                a = np.pi + side * spread
                wu, wv = u_px - 0.55 * L * np.cos(a) - 0.1 * L, v_px - 0.55 * L * np.sin(a)
                along = wu * np.cos(a) + wv * np.sin(a)
                across = -wu * np.sin(a) + wv * np.cos(a)
                ellipse = (along / (0.5 * L)) ** 2 + (across / (0.45 * W + 0.8)) ** 2
                value = np.maximum(value, 0.45 * darkness[i] * np.clip((1 - ellipse) * 4, 0, 1))
            # legs: thin lines that touch the threshold; the outer half sometimes breaks away
            gait = phase[t, i]
            for k in range(3):
                for side in (-1.0, 1.0):
                    base_u = leg_u[k] * L
                    base_v = side * half_width[i] * 0.9
                    ang = side * (leg_angle[k] + 0.25 * np.sin(gait + k * 2.1 + side))
                    knee = (base_u + 0.45 * L * np.cos(ang), base_v + 0.45 * L * np.sin(ang))
                    foot = (knee[0] + 0.45 * L * np.cos(ang - side * 0.5),
                            knee[1] + 0.45 * L * np.sin(ang - side * 0.5))
                    strength = darkness[i] * frame_rng.uniform(0.3, 0.5)
                    for (a0, a1), part_strength in (((base_u, base_v), knee), strength), \
                            ((knee, foot), strength * frame_rng.uniform(0.7, 1.1)):
                        d = _segment_distance(u_px, v_px, a0, a1)
                        value = np.maximum(value, part_strength * np.clip(1.1 - d, 0, 1))
                    # the knee is thinner: legs break there first
                    d_knee = np.hypot(u_px - knee[0], v_px - knee[1])
                    value = np.where(d_knee < 1.0, np.minimum(value, 0.7 * strength), value)
            y0, x0 = iy - patch, ix - patch
            sy = slice(max(0, y0), min(size, y0 + 2 * patch + 1))
            sx = slice(max(0, x0), min(size, x0 + 2 * patch + 1))
            sub = value[sy.start - y0: sy.stop - y0, sx.start - x0: sx.stop - x0]
            np.maximum(body[sy, sx], sub, out=body[sy, sx])
            touching.add(i, sy, sx, sub > 12.0)
        contact[t] = touching.of(n)
        image = (reflectance + sign * body) * light * flicker
        image += frame_rng.standard_normal((size, size), dtype=np.float32) * (
            noise + 0.2 * np.sqrt(np.maximum(image, 0)))
        specks = frame_rng.integers(0, size, (2, 40))
        image[specks[0], specks[1]] += frame_rng.choice([-50.0, 50.0], 40)
        np.clip(image, 0, 255, out=image)
        frames[t] = image.astype(np.uint8)

    truth = _truth(pos, heading, contact)
    return SyntheticVideo(frames=frames, ground_truth=truth, fps=fps,
                          background=background.astype(np.float32), n_individuals=n,
                          body_length=body_length, polarity=polarity, seed=seed, codes=codes,
                          realistic=True, sizes=2 * half_len, resting=~moving)


def _segment_distance(u: np.ndarray, v: np.ndarray, a: tuple[float, float], b: tuple[float, float]
                      ) -> np.ndarray:
    """Distance of every (u, v) to the segment a-b."""
    du, dv = b[0] - a[0], b[1] - a[1]
    length2 = max(du * du + dv * dv, 1e-9)
    k = np.clip(((u - a[0]) * du + (v - a[1]) * dv) / length2, 0, 1)
    return np.hypot(u - a[0] - k * du, v - a[1] - k * dv)


def _template_centroid(half_len: float, half_width: float) -> float:
    """How far the body's centre of mass lies ahead of its geometric centre (px, along u).

    The body is wider at the head, so its mass centre is shifted forwards; positions are the
    mass centre (what a tracker measures), so the drawing is shifted back by this much.
    """
    u = np.linspace(-1, 1, 2001)
    width = np.sqrt(np.clip(1 - u ** 2, 0, 1)) * (1 + 0.3 * u)
    return float((u * width).sum() / width.sum() * half_len)


def _wrap(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


def _angle_diff(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    return _wrap(target - current)


def cache_dir() -> Path:
    """Where generated sample videos are kept (``$NAPARI_TREX_CACHE`` or the user cache)."""
    root = os.environ.get("NAPARI_TREX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "napari-trex")
    return Path(root)


def sample_video(n_individuals: int = 4, n_frames: int = 500, seed: int = 0,
                 folder: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """The bundled sample as files: ``(video.mp4, ground_truth.csv)``, generated once and cached.

    The sample is generated rather than shipped (no large files in the package) and cached
    so it opens lazily like any real recording, which the tracking pipeline needs (it works
    on files, not on arrays in memory).
    """
    folder = Path(folder) if folder is not None else cache_dir()
    video = folder / f"sample_{n_individuals}animals_{n_frames}frames_seed{seed}.mp4"
    truth = video.with_name(f"{video.stem}_ground_truth.csv")
    if not (video.exists() and truth.exists()):
        generate(n_individuals=n_individuals, n_frames=n_frames, seed=seed).write(video)
    return video, truth


def read_ground_truth(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ground-truth CSV written by :meth:`SyntheticVideo.write_ground_truth` (``contact``
    is all 0 in files written before it existed)."""
    with open(path, encoding="utf-8") as handle:
        header = handle.readline().strip().split(",")
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    columns = {name: table[:, k] for k, name in enumerate(header)}
    out = {"frame": columns["frame"].astype(int), "identity": columns["identity"].astype(int),
           "x": columns["x"], "y": columns["y"], "angle": columns["angle"]}
    out["contact"] = columns.get("contact", np.zeros(len(table))).astype(np.int8)
    return out
