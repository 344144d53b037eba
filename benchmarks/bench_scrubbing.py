"""Scrubbing a 1080p video in napari with the tracking layers shown.

    xvfb-run -a .venv/bin/python benchmarks/bench_scrubbing.py [--frames 400] [--steps 120]

Writes a 1920×1080 H.264 video of 8 synthetic animals (keyframe every 250 frames, as
cameras record), tracks it, opens it in napari through the plugin's reader, and times one
frame step (dims change + canvas redraw) in three situations: the video alone, the video
with the Tracks and Points layers, and both again with the Timeline panel docked. Steps are
forward (playback, the frame after the last one) and random jumps. Figures, not asserts:
ms per step (median and 95th percentile) and the ratio layers / video alone.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import rss_mb


def make_video(path: Path, n_frames: int) -> Path:
    from napari_trex.core.datasets import generate
    from napari_trex.core.video import write_video

    synthetic = generate(n_individuals=8, n_frames=n_frames, size=1080, seed=5, body_length=40)
    pad = (1920 - 1080) // 2

    def frames():
        for f in synthetic.frames:
            yield np.pad(f, ((0, 0), (pad, pad)), mode="edge")

    return write_video(path, frames(), fps=25, keyframe_interval=250)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--workdir")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="napari-trex-scrub-"))
    path = work / f"scrub_1080p_{args.frames}.mp4"
    if not path.exists():
        make_video(path, args.frames)

    from napari_trex.core.pipeline import track_video
    from napari_trex.core.settings import Settings
    from napari_trex.core.video import open_video

    t0 = time.perf_counter()
    run = track_video(open_video(path), Settings().updated(track_max_individuals=8, track_max_speed=40.0))
    print(f"video {path.name}: 1920x1080, {args.frames} frames; tracked in {time.perf_counter() - t0:.0f} s "
          f"({len(run.result.tracklets)} tracklets)")

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_trex.napari.session import session_for
    from napari_trex.napari.widgets.timeline import TimelineWidget

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1600, 1000)
    viewer.open(str(path), plugin="napari-trex")
    canvas = viewer.window._qt_viewer.canvas  # noqa: SLF001 - to force one draw per step

    def step_ms(frames: list[int]) -> np.ndarray:
        times = []
        for f in frames:
            t = time.perf_counter()
            viewer.dims.set_current_step(0, f)
            QApplication.processEvents()
            canvas._scene_canvas.render()  # noqa: SLF001 - a full redraw, as on screen
            times.append((time.perf_counter() - t) * 1000)
        return np.array(times)

    rng = np.random.default_rng(0)
    n = args.frames
    forward = list(range(1, min(n, args.steps + 1)))
    jumps = rng.integers(0, n, args.steps).tolist()

    def measure(label: str) -> dict[str, np.ndarray]:
        step_ms([0])  # warm up (first decode, shader compilation)
        result = {"forward": step_ms(forward), "random": step_ms(jumps)}
        for kind, ms in result.items():
            print(f"  {label:<28} {kind:<8} median {np.median(ms):6.1f} ms, p95 {np.percentile(ms, 95):6.1f} ms "
                  f"({1000 / np.median(ms):.0f} steps/s)")
        return result

    alone = measure("video alone")
    session = session_for(viewer)
    session.set_run(run, None, path.stem)
    session.show_results(viewer)
    layers = measure("video + Tracks + Points")
    timeline = TimelineWidget(viewer)
    viewer.window.add_dock_widget(timeline, area="bottom")
    docked = measure("... + Timeline docked")
    for kind in ("forward", "random"):
        print(f"  ratio {kind}: layers / alone {np.median(layers[kind]) / np.median(alone[kind]):.2f}, "
              f"with timeline / alone {np.median(docked[kind]) / np.median(alone[kind]):.2f}")
    n_points = len(viewer.layers["animals"].data)
    print(f"  {n_points} points, {len(viewer.layers['tracks'].data)} track vertices; peak RSS {rss_mb():.0f} MB")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
