"""The command line runs where napari and Qt are not installed (a cluster worker)."""

from __future__ import annotations

import subprocess
import sys

BLOCK_GUI = """
import sys
for name in ("napari", "qtpy", "magicgui", "superqt", "npe2", "PyQt5", "PyQt6", "PySide2",
             "PySide6", "vispy", "psygnal"):
    sys.modules[name] = None  # importing any of them now fails, as on a machine without them
from napari_trex.cli import main
if __name__ == "__main__":
    folder = sys.argv[1]
    for args in (["sample", f"{folder}/v.mp4", "--frames", "60", "--individuals", "2", "--size", "128"],
                 ["track", f"{folder}/v.mp4", "-o", f"{folder}/out", "-q",
                  "--set", "track_max_individuals=2", "--set", "track_max_speed=30"],
                 ["export", f"{folder}/out"],
                 ["batch", f"{folder}/v.mp4", "--settings", f"{folder}/out/settings.toml",
                  "-o", f"{folder}/batch", "--scheduler", "threads"]):
        code = main(args)
        if code:
            sys.exit(f"{args[0]} failed with {code}")
    print("headless ok")
"""


def test_track_export_and_batch_run_without_napari_or_qt(tmp_path):
    script = tmp_path / "headless.py"
    script.write_text(BLOCK_GUI)
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "headless ok" in done.stdout
    assert (tmp_path / "out" / "data").is_dir() and (tmp_path / "batch" / "v" / "run.json").is_file()
