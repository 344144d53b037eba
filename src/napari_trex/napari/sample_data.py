"""napari sample data: File > Open Sample > napari-trex > Synthetic animals."""

from __future__ import annotations

from typing import Any

from ..core.datasets import read_ground_truth, sample_video
from ..core.video import open_video
from .layers import ground_truth_tracks_data, video_layer_data


def make_sample_data(n_individuals: int = 4, n_frames: int = 500, seed: int = 0) -> list[Any]:
    """The synthetic video (lazy, from a cached mp4) and its ground truth as a Tracks layer."""
    video_path, truth_path = sample_video(n_individuals=n_individuals, n_frames=n_frames, seed=seed)
    image = video_layer_data(open_video(video_path))
    image[1]["name"] = "synthetic animals"
    image[1]["metadata"]["ground_truth"] = str(truth_path)
    return [image, ground_truth_tracks_data(read_ground_truth(truth_path))]
