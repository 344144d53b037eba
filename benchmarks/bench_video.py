"""Video reading benchmark: open time, sequential decode, random access, memory.

    python benchmarks/bench_video.py [--frames 1500] [--hours 1] [--workdir DIR]

Generates a 1920x1080 H.264 video (keyframe every 250 frames), then a one-hour version of it
by re-muxing its packets (no re-encoding), and prints, measured in this one run:

* open time of the one-hour video (header only) and of its lazy dask array;
* the first jump into it (builds the frame index: reads packets, decodes nothing);
* sequential decode fps (the tracking hot path) and our ``Video.frames`` overhead vs raw PyAV;
* random access ms per frame (mean, p95) with the cache off;
* peak memory (RSS) of the process.

The same figures are printed for the recordings in ../shared/data when that folder exists.
Figures, not asserts: machines are noisy, so compare ratios measured in one run.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import repeat_video, rss_mb
from napari_trex.core.video import open_video, write_video

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def make_hd_video(path: Path, n_frames: int, seed: int = 0) -> Path:
    """Moving dark animals on a textured light background, 1920x1080, like a real recording."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    h, w = 1080, 1920
    background = (200 + gaussian_filter(rng.standard_normal((h, w)), 4) * 20).astype(np.float32)
    pos = rng.uniform([100, 100], [w - 100, h - 100], size=(10, 2))
    vel = rng.normal(0, 4, size=(10, 2))
    yy, xx = np.mgrid[-20:21, -20:21]
    blob = (np.exp(-(xx ** 2 / 200 + yy ** 2 / 40)) * 120).astype(np.float32)

    def frames():
        nonlocal pos, vel
        for _ in range(n_frames):
            img = background.copy()
            for x, y in pos.astype(int):
                img[y - 20:y + 21, x - 20:x + 21] -= blob
            img += rng.normal(0, 3, size=(h, w)).astype(np.float32)
            yield np.clip(img, 0, 255).astype(np.uint8)
            vel += rng.normal(0, 0.5, size=vel.shape)
            pos = np.clip(pos + vel, 40, [w - 40, h - 40])

    # crf 21 keeps some camera noise: about 4.5 Mbit/s, a realistic bitrate for 1080p
    return write_video(path, frames(), fps=25, keyframe_interval=250, crf=21)


def measure(path: Path, label: str, n_random: int = 100) -> None:
    import av

    t0 = time.perf_counter()
    video = open_video(path, cache_mb=0)
    t_open = time.perf_counter() - t0
    n = len(video)

    # raw PyAV sequential decode to greyscale: the ceiling for our iterator
    limit = min(n, 1500)
    t0 = time.perf_counter()
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for k, frame in enumerate(c.decode(s)):
            frame.to_ndarray(format="gray")
            if k + 1 >= limit:
                break
    raw_fps = limit / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    for _ in video.frames(0, limit):
        pass
    ours_fps = limit / (time.perf_counter() - t0)

    rng = random.Random(0)
    times = []
    for i in [rng.randrange(n) for _ in range(n_random)]:
        t0 = time.perf_counter()
        video.read(i)
        times.append((time.perf_counter() - t0) * 1000)
    times_arr = np.array(times)
    info = video.info
    print(f"{label}: {info.width}x{info.height}, {n} frames, codec {info.codec}, keyframe every "
          f"{info.keyframe_interval or float('nan'):.0f}")
    print(f"  open (incl. index if small): {t_open * 1000:.0f} ms")
    print(f"  sequential decode: ours {ours_fps:.0f} fps, raw PyAV {raw_fps:.0f} fps, "
          f"ratio ours/raw = {ours_fps / raw_fps:.2f}")
    print(f"  random access (cache off): mean {times_arr.mean():.1f} ms, "
          f"p95 {np.percentile(times_arr, 95):.1f} ms per frame")
    print(f"  peak RSS so far: {rss_mb():.0f} MB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--frames", type=int, default=1500, help="frames of the encoded 1080p clip")
    parser.add_argument("--hours", type=float, default=1.0, help="length of the long video (h)")
    parser.add_argument("--workdir", help="where to write the generated videos (default: temp)")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="napari-trex-bench-"))
    work.mkdir(parents=True, exist_ok=True)

    clip = work / "hd_clip.mp4"
    if not clip.exists():
        t0 = time.perf_counter()
        make_hd_video(clip, args.frames)
        print(f"generated {clip.name} ({args.frames} frames) in {time.perf_counter() - t0:.0f} s")
    measure(clip, "1080p clip")

    total = int(args.hours * 3600 * 25)
    long = work / f"hd_{args.hours:g}h.mp4"
    if not long.exists():
        t0 = time.perf_counter()
        repeat_video(clip, long, total)
        print(f"generated {long.name} ({long.stat().st_size / 2**30:.2f} GiB) by re-muxing in "
              f"{time.perf_counter() - t0:.0f} s")
    import dask.array  # noqa: F401 - import time is not open time

    rss_before = rss_mb()
    t0 = time.perf_counter()
    video = open_video(long)
    t_open = time.perf_counter() - t0
    t0 = time.perf_counter()
    array = video.as_dask()
    t_dask = time.perf_counter() - t0
    t0 = time.perf_counter()
    middle = video.read(len(video) // 2 + 123)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    video.read(len(video) // 3 + 7)
    t_second = time.perf_counter() - t0
    print(f"{args.hours:g} h 1080p video ({long.stat().st_size / 2**30:.2f} GiB, {len(video)} frames):")
    print(f"  open: {t_open * 1000:.0f} ms, lazy dask array {array.shape} chunks "
          f"{array.chunksize}: {t_dask * 1000:.0f} ms")
    print(f"  first jump (builds the frame index): {t_first:.2f} s; next jump: {t_second * 1000:.0f} ms")
    print(f"  frame {middle.shape}; peak RSS grew by {rss_mb() - rss_before:.0f} MB "
          f"(the video is {long.stat().st_size / 2**20:.0f} MB)")

    if SHARED.is_dir():
        for path in sorted(SHARED.glob("*/*")):
            if path.suffix.lower() in (".mp4", ".avi", ".mov", ".mkv"):
                measure(path, f"{path.parent.name}/{path.name}")
    else:
        print(f"({SHARED} not found: skipping real recordings)")
    print(f"peak RSS of the whole run: {rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
