"""A user sets parameters by TRex's names, saves them, and imports old TRex settings files."""

from __future__ import annotations

import pytest

from napari_trex.core.errors import SettingsError
from napari_trex.core.io import atomic_path
from napari_trex.core.settings import (
    V2_ALIASES,
    Settings,
    import_trex_settings,
    parameter_info,
    parameter_names,
    parse_assignments,
    parse_trex_value,
)


def test_defaults_are_trex_v1_defaults():
    s = Settings()
    assert s.track_max_speed == 10.0
    assert s.blob_size_ranges == [(0.1, 3.0)]
    assert s.track_trusted_probability == 0.5
    assert s.track_max_reassign_time == 0.5
    assert s.track_speed_decay == 0.7
    assert s.huge_timestamp_seconds == 0.2
    assert s.matching_probability_threshold == 0.1
    assert s.recognition_image_size == (0, 0)  # automatic, from the animals' size
    # TRex's default: crops straightened along the midline; its legacy alignment is moments
    assert s.recognition_normalization == "posture"
    assert Settings().updated(recognition_normalization="legacy").recognition_normalization == "moments"
    # TRex's network layout, v118_3, by default; the deep one on request; no other
    assert s.visual_identification_version == "v118_3"
    assert Settings().updated(visual_identification_version="deep").visual_identification_version == "deep"
    with pytest.raises(SettingsError, match="visual_identification_version"):
        Settings().updated(visual_identification_version="v200")
    # TRex's learning rate is 1e-4: 5e-4 reached the same identities in ~40 % less time
    assert (s.gpu_max_epochs, s.gpu_learning_rate, s.gpu_max_sample_gb) == (150, 5e-4, 2.0)
    assert s.recognition_segment_add_factor == 1.5
    assert s.averaging_method == "mode" and s.average_samples == 100


def test_every_parameter_has_a_description_and_a_section_for_the_widgets():
    for name in parameter_names():
        info = parameter_info(name)
        assert info["description"], name
        assert info["section"], name
    assert parameter_info("track_max_speed")["unit"] == "cm/s"
    assert parameter_info("track_max_individuals")["advanced"] is False


def test_automatic_uniqueness_and_pixel_size_follow_trex():
    s = Settings()
    assert s.accepted_uniqueness(8) == pytest.approx(0.9375)
    assert s.accepted_uniqueness(2) == pytest.approx(0.8)
    assert s.updated(gpu_accepted_uniqueness=0.95).accepted_uniqueness(8) == 0.95
    assert s.pixel_size_cm(600) == pytest.approx(0.05)
    assert s.updated(cm_per_pixel=0.1).pixel_size_cm(600) == 0.1


def test_toml_round_trip_keeps_everything(tmp_path):
    s = Settings().updated(
        track_max_individuals=8, blob_size_ranges=[[0.5, 2], [4, 6]], track_max_speed=25.5,
        manual_matches={1200: {0: 3222080537, 3: 1048576031}}, manual_splits={5: [1, 2]},
        track_ignore=[[(0, 0), (10, 0), (10, 10)]], output_dir="/data/out", averaging_method="max",
    )
    path = s.save(tmp_path / "run.toml")
    text = path.read_text()
    assert "# Fastest plausible movement" in text  # self-documenting file
    assert Settings.load(path) == s
    only = Settings().updated(track_max_speed=3).save(tmp_path / "short.toml", only_changed=True)
    assert Settings.load(only).track_max_speed == 3 and "gpu_max_epochs" not in only.read_text()


def test_trex_settings_file_with_v2_names_comments_and_bare_words(tmp_path):
    path = tmp_path / "fish.settings"
    path.write_text(
        "# exported by TRex\n"
        "track_max_individuals = 8\n"
        "blob_size_ranges = [[0.5,2]]\n"
        "track_max_speed = 25.5 # cm/s\n"
        "averaging_method = max\n"
        'output_dir = "/data/out # not a comment"\n'
        "calculate_posture = false\n"
        "accumulation_sufficient_uniqueness = 0.95\n"
        "individual_image_size = [64,64]\n"
        "track_size_filter = [[0.4,1.8]]\n"
        "manual_matches = {1200:{0:3222080537,3:1048576031}}\n"
    )
    s, skipped = import_trex_settings(path)
    assert skipped == ["calculate_posture"]  # TRex's, not implemented here: a notice, no error
    assert s.track_max_individuals == 8 and s.track_max_speed == 25.5
    assert s.averaging_method == "max"
    assert s.output_dir == "/data/out # not a comment"
    assert s.gpu_accepted_uniqueness == 0.95  # v2 alias
    assert s.recognition_image_size == (64, 64)  # v2 alias
    assert s.blob_size_ranges == [(0.4, 1.8)]  # the later (v2) line wins
    assert s.manual_matches == {1200: {0: 3222080537, 3: 1048576031}}
    assert Settings.load(path) == s  # same through the generic loader


def test_unknown_names_in_a_trex_file_are_named_or_skipped_on_request(tmp_path):
    path = tmp_path / "gui.settings"
    path.write_text("track_max_speed = 12\ngui_show_blobs = true\ntrack_max_sped = 3\n")
    with pytest.raises(SettingsError, match="did you mean 'track_max_speed'") as exc:
        import_trex_settings(path)
    assert "gui_show_blobs" in str(exc.value) and "--ignore-unknown" in str(exc.value)
    s, skipped = import_trex_settings(path, strict=False)
    assert s.track_max_speed == 12 and skipped == ["gui_show_blobs", "track_max_sped"]


def test_all_v2_aliases_point_at_real_parameters():
    names = set(parameter_names())
    assert set(V2_ALIASES.values()) <= names
    assert not set(V2_ALIASES) & names


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"track_max_speed": -5}, "track_max_speed"),
        ({"blob_size_ranges": [[3, 0.1]]}, "blob_size_ranges: min must not be larger than max"),
        ({"blob_size_ranges": []}, "blob_size_ranges"),
        ({"track_trusted_probability": 1.5}, "track_trusted_probability"),
        ({"recognition_image_size": [8, 8]}, "recognition_image_size"),
        ({"gpu_max_sample_gb": 0}, "gpu_max_sample_gb"),
        ({"averaging_method": "median"}, "averaging_method"),
        ({"crop_offsets": [0.6, 0, 0.6, 0]}, "crop_offsets"),
        ({"track_max_individuals": "many"}, "track_max_individuals"),
        ({"track_include": [[(0, 0), (1, 1)]]}, "at least 3 points"),
    ],
)
def test_impossible_values_name_the_parameter(values, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_mapping(values)


def test_unknown_name_suggests_the_closest_known_one():
    with pytest.raises(SettingsError, match="unknown parameter 'gpu_accepted_uniquenes'; did you mean "
                                           "'gpu_accepted_uniqueness'"):
        Settings().updated(gpu_accepted_uniquenes=0.9)


def test_bad_toml_file_is_a_settings_error(tmp_path):
    (tmp_path / "bad.toml").write_text("track_max_speed = = 3")
    with pytest.raises(SettingsError, match="not valid TOML"):
        Settings.load(tmp_path / "bad.toml")
    with pytest.raises(SettingsError, match="not found"):
        Settings.load(tmp_path / "missing.toml")


def test_command_line_assignments_parse_trex_values():
    assert parse_assignments(["track_max_speed=20", "blob_size_ranges=[[0.1,3]]",
                              "averaging_method=max", "use_closing=false"]) == {
        "track_max_speed": 20, "blob_size_ranges": [[0.1, 3]], "averaging_method": "max",
        "use_closing": False}
    with pytest.raises(SettingsError, match="does not implement"):
        parse_assignments(["match_mode=tree"])
    with pytest.raises(SettingsError, match="NAME=VALUE"):
        parse_assignments(["track_max_speed"])
    assert parse_trex_value('"a true story"') == "a true story"


def test_failed_save_leaves_the_previous_file_intact(tmp_path):
    target = tmp_path / "settings.toml"
    Settings().updated(track_max_speed=7).save(target)
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half a fi")
        raise RuntimeError("crash while writing")
    assert Settings.load(target).track_max_speed == 7
    assert [p.name for p in tmp_path.iterdir()] == ["settings.toml"]


def test_every_settings_field_changes_something():
    """A field no code reads would be a knob that does nothing: each one must be read
    somewhere beyond its own definition (settings.py's methods count, its field list does not)."""
    import re
    from pathlib import Path

    import napari_trex

    root = Path(napari_trex.__file__).parent
    sources = {p: p.read_text(encoding="utf-8") for p in root.rglob("*.py")}
    definition = re.compile(r"^    (\w+): .*= _p\(", re.M)
    unread = []
    for name in Settings.model_fields:
        uses = sum(len(re.findall(rf"\b{name}\b", text)) for text in sources.values())
        defined = sum(1 for text in sources.values() for m in definition.finditer(text)
                      if m.group(1) == name)
        aliases = sum(1 for alias, target in V2_ALIASES.items() if target == name)
        if uses - defined - aliases <= 0:
            unread.append(name)
    assert unread == []


def test_an_older_toml_file_naming_a_removed_parameter_still_loads(tmp_path):
    path = tmp_path / "old.toml"
    path.write_text("track_max_speed = 12.0\nmatch_mode = \"tree\"\ncalculate_posture = true\n")
    assert Settings.load(path).track_max_speed == 12.0
