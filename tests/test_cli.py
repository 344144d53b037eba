"""The command line: one-line errors and non-zero exits for bad input, useful output otherwise."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from napari_trex.cli import main
from napari_trex.core.settings import Settings


def _run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_info_prints_the_probe(capsys, numbered_video):
    code, out, err = _run(capsys, "info", str(numbered_video))
    assert code == 0
    assert "frames:     600" in out and "fps:        25" in out and "128 x 96 px" in out
    assert "h264" in out and "every 250 frames" in out and "constant frame rate" in out


def test_info_as_json(capsys, vfr_video):
    code, out, _ = _run(capsys, "info", "--json", str(vfr_video[0]))
    assert code == 0
    info = json.loads(out)
    assert info["n_frames"] == 300 and info["width"] == 128 and info["kind"] == "video file"


@pytest.mark.parametrize("kind", ["missing", "not-a-video", "empty-folder"])
def test_info_on_bad_input_is_one_line_and_non_zero(capsys, tmp_path, kind):
    path = {"missing": tmp_path / "nope.mp4", "not-a-video": tmp_path / "x.mp4",
            "empty-folder": tmp_path / "empty"}[kind]
    if kind == "not-a-video":
        path.write_text("not a video")
    if kind == "empty-folder":
        path.mkdir()
    code, out, err = _run(capsys, "info", str(path))
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("napari-trex: error: ")
    assert "Traceback" not in err


def test_sample_writes_video_and_ground_truth(capsys, tmp_path):
    code, out, _ = _run(capsys, "sample", str(tmp_path / "demo.mp4"), "--frames", "20",
                        "--individuals", "3", "--size", "128")
    assert code == 0
    assert (tmp_path / "demo.mp4").is_file()
    lines = (tmp_path / "demo_ground_truth.csv").read_text().splitlines()
    assert lines[0] == "frame,identity,x,y,angle,contact" and len(lines) == 1 + 20 * 3
    code, _, err = _run(capsys, "sample", str(tmp_path / "demo.txt"))
    assert code == 1 and "video extension" in err
    code, _, _ = _run(capsys, "sample", str(tmp_path / "hard.mp4"), "--frames", "20",
                      "--individuals", "3", "--size", "256", "--seed", "1", "--realistic")
    easy = (tmp_path / "demo_ground_truth.csv").read_text().splitlines()[1:4]
    hard = (tmp_path / "hard_ground_truth.csv").read_text().splitlines()
    assert code == 0 and len(hard) == 1 + 20 * 3 and hard[1:4] != easy


def test_params_lists_every_parameter_with_unit_and_description(capsys):
    code, out, _ = _run(capsys, "params")
    assert code == 0
    assert "track_max_speed = 10.0 [cm/s]" in out and "gpu_accepted_uniqueness" in out


def test_params_converts_a_trex_settings_file_to_toml(capsys, tmp_path):
    trex = tmp_path / "old.settings"
    trex.write_text("track_max_individuals = 5\ngui_zoom = 2\naccumulation_sufficient_uniqueness = 0.9\n")
    code, _, err = _run(capsys, "params", "--settings", str(trex))
    assert code == 1 and "gui_zoom" in err and err.count("\n") == 1
    code, out, err = _run(capsys, "params", "--settings", str(trex), "--ignore-unknown",
                          "--set", "track_max_speed=30", "--save", str(tmp_path / "new.toml"))
    assert code == 0 and "skipped 1 unknown name(s): gui_zoom" in err
    loaded = Settings.load(tmp_path / "new.toml")
    assert (loaded.track_max_individuals, loaded.gpu_accepted_uniqueness, loaded.track_max_speed) == (5, 0.9, 30)


def test_bad_parameter_value_names_it(capsys):
    code, _, err = _run(capsys, "params", "--set", "track_max_speed=-3")
    assert code == 1 and "track_max_speed" in err and err.count("\n") == 1
    code, _, err = _run(capsys, "params", "--set", "track_max_sped=3")
    assert code == 1 and "did you mean 'track_max_speed'" in err


def test_console_script_is_installed():
    beside_python = Path(sys.executable).parent / "napari-trex"
    exe = str(beside_python) if beside_python.exists() else shutil.which("napari-trex")
    assert exe is not None, "pip install -e . should install the napari-trex command"
    result = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "info" in result.stdout and "sample" in result.stdout
    result = subprocess.run([exe, "info", "/no/such/video.mp4"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1 and result.stderr.strip().count("\n") == 0
