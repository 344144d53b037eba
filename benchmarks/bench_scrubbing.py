"""Scrubbing a 1080p video in napari with the tracking layers shown.

    xvfb-run -a .venv/bin/python benchmarks/bench_scrubbing.py [--frames 400] [--steps 120]

Writes a 1920×1080 H.264 video of 8 synthetic animals (keyframe every 250 frames, as
cameras record; 2 × 400 generated frames), tracks it, opens it in napari through the
plugin's reader, and times one frame step (dims change + full canvas redraw) for the video
alone and for the video with the Tracks and Points layers and the Timeline panel. Steps are
forward (playback) and random jumps. Each situation gets its own frames (first and second
half of the video) so both pay for decoding ("cold"); then each repeats its frames with the
decoded frames cached ("warm"), which isolates what the layers cost. Figures, not asserts:
ms per step (median, 95th percentile) and the ratios with / without layers.
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
    half = work / f"scrub_1080p_{args.frames}.mp4"
    path = work / f"scrub_1080p_{2 * args.frames}.mp4"
    if not path.exists():
        from _common import repeat_video

        if not half.exists():
            make_video(half, args.frames)
        repeat_video(half, path, 2 * args.frames)

    from napari_trex.core.pipeline import track_video
    from napari_trex.core.settings import Settings
    from napari_trex.core.video import open_video

    t0 = time.perf_counter()
    run = track_video(open_video(path), Settings().updated(track_max_individuals=8, track_max_speed=40.0))
    print(f"video {path.name}: 1920x1080, {2 * args.frames} frames; tracked in {time.perf_counter() - t0:.0f} s "
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
    frames = {}
    for part, offset in (("alone", 0), ("layers", n)):
        frames[part] = {"forward": list(range(offset + 1, offset + min(n, args.steps + 1))),
                        "random": (offset + rng.integers(0, n, args.steps)).tolist()}

    def measure(label: str, part: str, warm: str) -> dict[str, np.ndarray]:
        result = {kind: step_ms(f) for kind, f in frames[part].items()}
        for kind, ms in result.items():
            print(f"  {label:<22} {warm:<5} {kind:<8} median {np.median(ms):6.1f} ms, "
                  f"p95 {np.percentile(ms, 95):6.1f} ms ({1000 / np.median(ms):.0f} steps/s)")
        return result

    step_ms([0])  # shader compilation, first decode
    cold_alone = measure("video alone", "alone", "cold")
    session = session_for(viewer)
    session.set_run(run, None, path.stem)
    session.show_results(viewer)
    viewer.window.add_dock_widget(TimelineWidget(viewer), area="bottom")
    cold_layers = measure("video + layers + timeline", "layers", "cold")
    for layer in ("tracks", "animals"):
        viewer.layers[layer].visible = False
    warm_alone = measure("video alone", "layers", "warm")
    for layer in ("tracks", "animals"):
        viewer.layers[layer].visible = True
    warm_layers = measure("video + layers + timeline", "layers", "warm")
    for only in ("tracks", "animals"):  # where the extra time goes
        for layer in ("tracks", "animals"):
            viewer.layers[layer].visible = layer == only
        measure(f"video + {only} only", "layers", "warm")
    for kind in ("forward", "random"):
        print(f"  ratio {kind}: cold {np.median(cold_layers[kind]) / np.median(cold_alone[kind]):.2f}, "
              f"warm {np.median(warm_layers[kind]) / np.median(warm_alone[kind]):.2f} (with layers / alone)")
    n_points = len(viewer.layers["animals"].data)
    print(f"  {n_points} points, {len(viewer.layers['tracks'].data)} track vertices; peak RSS {rss_mb():.0f} MB")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
