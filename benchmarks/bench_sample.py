"""Synthetic sample generation speed: 8 animals x 2000 frames x 512² (the issue's yardstick).

    python benchmarks/bench_sample.py [--individuals 8] [--frames 2000] [--size 512]

Prints generation time, frames per second and the share of frames in which two animals touch
(how often identities are put at risk), plus encode time to H.264.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_trex.core.datasets import generate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--individuals", type=int, default=8)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    t0 = time.perf_counter()
    video = generate(n_individuals=args.individuals, n_frames=args.frames, size=args.size, seed=1)
    elapsed = time.perf_counter() - t0
    pos = video.positions()
    d = np.linalg.norm(pos[:, :, None] - pos[:, None], axis=-1)
    iu = np.triu_indices(args.individuals, 1)
    touching = (d[:, iu[0], iu[1]] < video.body_length).any(axis=1).mean()
    print(f"generated {args.individuals} animals x {args.frames} frames x {args.size}² in "
          f"{elapsed:.1f} s ({args.frames / elapsed:.0f} frames/s)")
    print(f"frames where two animals are closer than a body length: {touching:.0%}")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path, _ = video.write(Path(tmp) / "sample.mp4")
        print(f"encoded to H.264 in {time.perf_counter() - t0:.1f} s "
              f"({path.stat().st_size / 2**20:.1f} MiB)")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
