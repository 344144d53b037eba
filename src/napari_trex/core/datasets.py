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

Ground truth is one row per animal and frame: ``frame, identity, x, y, angle`` where
``(x, y)`` is the centre of mass of the drawn body (pixels, x to the right, y down) and
``angle`` the heading in radians (``atan2(dy, dx)`` in image coordinates, head direction).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .io import atomic_write_text

GROUND_TRUTH_COLUMNS = ("frame", "identity", "x", "y", "angle")


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

    def write_ground_truth(self, path: str | os.PathLike) -> Path:
        """CSV ``frame,identity,x,y,angle`` (atomically)."""
        gt = self.ground_truth
        lines = [",".join(GROUND_TRUTH_COLUMNS)]
        lines += [f"{f},{i},{x:.3f},{y:.3f},{a:.5f}"
                  for f, i, x, y, a in zip(gt["frame"], gt["identity"], gt["x"], gt["y"], gt["angle"])]
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
) -> SyntheticVideo:
    """Generate a seeded synthetic recording (same arguments → the same frames, bit for bit).

    ``body_length`` in px; ``mean_speed`` in body lengths per second; ``pattern_contrast``
    is how much lighter an individual's spots are than the rest of the body (0.3 = 30 %
    of the body's darkness); ``cohesion`` pulls animals towards the group (more crossings);
    ``illumination_drift`` is the amplitude of the slow light change (fraction).
    """
    if n_individuals < 1 or n_frames < 1:
        raise ValueError("need at least one animal and one frame")
    if size % 2 or size < 64:
        raise ValueError("size must be even and at least 64 px")
    if polarity not in ("dark_on_light", "light_on_dark"):
        raise ValueError("polarity must be 'dark_on_light' or 'light_on_dark'")
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
    for t in range(n_frames):
        illum = 1 + illumination_drift * np.sin(2 * np.pi * t * dt / drift_period)
        body = np.zeros((size, size), dtype=np.float32)
        for i in range(n):
            cx, cy = pos[t, i]
            ix, iy = int(round(cx)), int(round(cy))
            ys, xs = iy + offs, ix + offs
            gx, gy = np.meshgrid(xs - cx, ys - cy)
            c, s = np.cos(heading[t, i]), np.sin(heading[t, i])
            u_px = gx * c + gy * s + centroid_shift  # along the body, towards the head
            v_px = -gx * s + gy * c
            L, W = half_len * scale[i], half_width * scale[i]
            u = u_px / L
            # the tail half bends sideways with the swimming phase
            bend = 0.18 * W * np.sin(phase[t, i] + 2.5 * u) * np.clip((1 - u) / 2, 0, 1) ** 1.5
            w_u = W * np.sqrt(np.clip(1 - u ** 2, 0, 1)) * (1 + 0.3 * u)
            v_off = v_px - bend
            # anti-aliased edge: distance (px) to the outline across and along the body
            inside = np.clip(np.minimum(w_u - np.abs(v_off), (1 - np.abs(u)) * L) + 0.5, 0, 1)
            v_rel = v_off / np.maximum(w_u, 1e-3)
            spots = np.zeros_like(u)
            for k in np.flatnonzero(codes[i]):
                spots += np.exp(-((u - spot_u[k]) ** 2 + (v_rel - spot_v[k]) ** 2 * 0.35) / (2 * spot_sigma ** 2))
            value = darkness[i] * inside * (1 - pattern_contrast * np.clip(spots, 0, 1))
            y0, x0 = iy - patch, ix - patch
            sy = slice(max(0, y0), min(size, y0 + 2 * patch + 1))
            sx = slice(max(0, x0), min(size, x0 + 2 * patch + 1))
            sub = value[sy.start - y0: sy.stop - y0, sx.start - x0: sx.stop - x0]
            np.maximum(body[sy, sx], sub, out=body[sy, sx])
        image = background * illum + sign * body
        image += frame_rng.standard_normal((size, size), dtype=np.float32) * noise
        np.clip(image, 0, 255, out=image)
        frames[t] = image.astype(np.uint8)

    frame_ids = np.repeat(np.arange(n_frames), n)
    truth = {
        "frame": frame_ids,
        "identity": np.tile(np.arange(n), n_frames),
        "x": pos[:, :, 0].ravel(),
        "y": pos[:, :, 1].ravel(),
        "angle": heading.ravel(),
    }
    return SyntheticVideo(frames=frames, ground_truth=truth, fps=fps, background=background,
                          n_individuals=n, body_length=body_length, polarity=polarity, seed=seed,
                          codes=codes)


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
    """Read a ``frame,identity,x,y,angle`` CSV written by :meth:`SyntheticVideo.write_ground_truth`."""
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    return {"frame": table[:, 0].astype(int), "identity": table[:, 1].astype(int),
            "x": table[:, 2], "y": table[:, 3], "angle": table[:, 4]}
