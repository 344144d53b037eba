"""Shared fixtures: small generated videos whose frames carry their own frame number."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from napari_trex.core.video import write_video

from helpers import numbered_frames


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Sample videos are generated into a per-session cache, never the user's."""
    os.environ["NAPARI_TREX_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield


@pytest.fixture(scope="session")
def numbered_video(tmp_path_factory) -> Path:
    """600 frames, H.264 with B-frames, one keyframe every 250 frames (as many recordings)."""
    path = tmp_path_factory.mktemp("videos") / "numbered.mp4"
    return write_video(path, numbered_frames(600), fps=25, keyframe_interval=250)


@pytest.fixture(scope="session")
def vfr_video(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """Variable frame rate: gaps between 20 and 80 ms."""
    times = np.cumsum(np.random.default_rng(3).uniform(0.02, 0.08, 300))
    times -= times[0]
    path = tmp_path_factory.mktemp("videos") / "vfr.mp4"
    return write_video(path, numbered_frames(300), fps=25, keyframe_interval=100,
                       timestamps=times), times


@pytest.fixture(scope="session")
def trio_video(tmp_path_factory) -> Path:
    """Three well-separated animals, 150 frames, 256 px: what the command-line tests track."""
    from napari_trex.core.datasets import generate

    folder = tmp_path_factory.mktemp("trio")
    path, _ = generate(n_individuals=3, n_frames=150, size=256, seed=3, body_length=20).write(
        folder / "trio.mp4")
    return path
