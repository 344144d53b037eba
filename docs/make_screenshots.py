"""Screenshots of every napari-trex panel on the synthetic sample, for README and docs.

    xvfb-run -a .venv/bin/python docs/make_screenshots.py [--out docs/screenshots]

Drives the napari-trex dock as a user would (set parameters, preview, Track, identify with a
small training budget, correct) and grabs the whole window after each step, at 1366x768 (a
laptop screen). Needs a display: Xvfb here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(HERE / "screenshots"))
    parser.add_argument("--frame", type=int, default=180)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import napari
    from qtpy.QtWidgets import QApplication
    from skimage.io import imsave

    def settle(seconds: float = 0.3) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            QApplication.processEvents()
            time.sleep(0.02)

    def wait(job) -> None:
        while job.running:
            settle(0.2)
        settle()

    def shot(name: str) -> None:
        viewer.window.resize(1366, 768)  # a laptop screen: everything must fit there
        settle()
        path = out / name
        imsave(path, viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
        print(f"wrote {path}")

    viewer = napari.Viewer(title="napari-trex")
    viewer.window.resize(1366, 768)
    viewer.open_sample("napari-trex", "synthetic_animals")
    viewer.layers["ground truth"].visible = False
    _, workspace = viewer.window.add_plugin_dock_widget("napari-trex", "napari-trex")
    settle()
    viewer.dims.set_current_step(0, args.frame)
    tracking = workspace.show_tab("Track")
    tracking.form.field("track_max_individuals").value = 4
    tracking.form.field("track_max_speed").value = 30.0
    tracking.preview.value = True
    shot("tracking_preview.png")

    tracking.preview.value = False
    wait(tracking.start_tracking())
    shot("tracking.png")

    ident = workspace.show_tab("Identify")
    ident.form.field("gpu_max_epochs").value = 10
    wait(ident.start("start"))
    shot("identification.png")

    workspace.show_tab("Dataset")
    viewer.dims.set_current_step(0, args.frame)
    shot("dataset.png")

    # corrections: select the animal with the least confident tracklet here, give it another id
    corrections = workspace.show_tab("Correct")
    from napari_trex.napari.session import session_for

    session = session_for(viewer)
    frame = args.frame
    seen = session.run.result.tracklet_of[frame]
    tid = int(min((t for t in seen if t >= 0), key=lambda t: session.identities.probability[t]))
    slot = int(list(seen).index(tid))
    row = session.run.result.assignment[frame, slot]
    det = session.run.result.detections
    corrections.select_at(det["x"][row], det["y"][row])
    viewer.scene.camera.center = (det["y"][row], det["x"][row])
    viewer.scene.camera.zoom = 2.5
    shot("corrections_select.png")
    current = int(session.identities.identity[tid])
    corrections.assign((current + 1) % session.run.n_individuals if current >= 0 else 0)
    shot("corrections.png")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
