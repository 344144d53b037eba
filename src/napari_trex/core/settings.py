"""Every parameter of the pipeline in one validated model, with TRex's names and defaults.

Users coming from TRex know its parameter names (``track_max_individuals``,
``track_max_speed``, ``blob_size_ranges``, ``gpu_accepted_uniqueness`` ...), so napari-trex
uses the TRex v1 names and defaults (v1.1.9, see ``trex-reference.md``); the newer TRex v2
names are accepted as aliases. Each field carries a unit and a one-line description, which
the dock widgets show as tooltips and the TOML file as comments.

Settings are saved as the project's own TOML file and can be imported from TRex
``.settings`` files (``name = value`` lines, ``#`` comments). An unknown name is an error that
suggests the closest known name; an impossible value is an error that names the parameter.
"""

from __future__ import annotations

import ast
import difflib
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import SettingsError
from .io import atomic_write_text

Range = tuple[float, float]
Polygon = list[tuple[float, float]]


def _p(default: Any, description: str, unit: str = "", section: str = "tracking",
       advanced: bool = True, **constraints: Any) -> Any:
    """A parameter: default, tooltip text, unit, and where the widgets show it."""
    return Field(default, description=description,
                 json_schema_extra={"unit": unit, "section": section, "advanced": advanced},
                 **constraints)


class Settings(BaseModel):
    """All parameters of a napari-trex run (TRex v1 names, TRex v1.1.9 defaults)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    # -- the recording -------------------------------------------------------------------------
    frame_rate: float = _p(0.0, "Frames per second; 0 = read from the video (image folders assume 25)",
                           "fps", "video", ge=0)
    cm_per_pixel: float = _p(0.0, "Real size of one pixel; 0 = meta_real_width / video width",
                             "cm/px", "video", advanced=False, ge=0)
    meta_real_width: float = _p(30.0, "Real width of the whole video frame, used when cm_per_pixel is 0",
                                "cm", "video", gt=0)
    output_dir: str = _p("", "Folder for results; empty = a folder beside the video", "", "output",
                         advanced=False)
    analysis_range: tuple[int, int] = _p(
        (-1, -1), "First and last frame to analyse [start, end] (-1 = the video's first / last); "
        "frames outside hold no animals", "frames", "video")

    # -- background and detection (TGrabs) -----------------------------------------------------
    average_samples: int = _p(100, "Frames sampled evenly over the video to build the background",
                              "frames", "detection", ge=1)
    averaging_method: Literal["mode", "mean", "max", "min"] = _p(
        "mode", "Per-pixel combination of the samples: mode, mean, max (dark animals on bright "
        "background) or min (bright animals on dark background)", "", "detection")
    threshold: int = _p(9, "Minimum difference to the background for a pixel to belong to an animal",
                        "grey levels", "detection", advanced=False, ge=0, le=255)
    track_threshold: int = _p(15, "Threshold used when tracking; the effective value is max(threshold, this)",
                              "grey levels", "detection", ge=0, le=255)
    enable_absolute_difference: bool = _p(
        True, "Use |background - pixel|, so light and dark animals are both found; off = only "
        "animals darker than the background", "", "detection")
    enable_difference: bool = _p(True, "Subtract the background; off = threshold raw grey values",
                                 "", "detection")
    use_closing: bool = _p(False, "Morphological closing of the foreground mask (joins broken animals)",
                           "", "detection")
    closing_size: int = _p(3, "Size of the closing kernel", "px", "detection", ge=1)
    dilation_size: int = _p(0, "Dilate the foreground mask by this many pixels (0 = off)", "px",
                            "detection", ge=0)
    crop_offsets: tuple[float, float, float, float] = _p(
        (0.0, 0.0, 0.0, 0.0), "Fraction of the frame cut away at left, top, right, bottom", "fraction",
        "detection")
    blob_size_range: Range = _p((0.01, 500000.0), "Area of blobs kept at detection (TGrabs level)",
                                "cm²", "detection")
    background_image: str = _p("", "Image file to use as background instead of estimating it", "",
                               "detection")

    # -- tracking ------------------------------------------------------------------------------
    track_max_individuals: int = _p(
        0, "Number of animals; 0 = estimate from the video (95th percentile of blob counts)", "animals",
        "tracking", advanced=False, ge=0)
    blob_size_ranges: list[Range] = _p(
        [(0.1, 3.0)], "Area of a single animal: smaller blobs are noise, larger ones may be several "
        "animals (split candidates)", "cm²", "tracking", advanced=False)
    auto_minmax_size: bool = _p(False, "Estimate blob_size_ranges from the video", "", "tracking")
    track_max_speed: float = _p(10.0, "Fastest plausible movement of an animal; faster jumps end a "
                                "tracklet", "cm/s", "tracking", advanced=False, gt=0)
    track_speed_decay: float = _p(0.7, "How fast the predicted motion of a lost animal decays "
                                  "(1 = it is assumed to stay put)", "", "tracking", ge=0, le=1)
    track_max_reassign_time: float = _p(0.5, "After this long lost, an animal may be re-attached "
                                        "to any free blob", "s", "tracking", gt=0)
    track_trusted_probability: float = _p(0.5, "Matches that fit the predicted movement less than "
                                          "this end the tracklet", "probability", "tracking", ge=0,
                                          le=1)
    track_ambiguity_ratio: float = _p(0.5, "End a tracklet where another blob (or animal) was at least "
                                      "this share as likely as the chosen match: a near-crossing "
                                      "(napari-trex; 1 = never)", "fraction", "tracking", gt=0, le=1)
    track_time_probability_enabled: bool = _p(True, "Lower the match probability of animals that "
                                              "were lost recently", "", "tracking")
    matching_probability_threshold: float = _p(0.1, "Matches less probable than this are never made",
                                               "probability", "tracking", ge=0, le=1)
    track_ignore: list[Polygon] = _p([], "Polygons (x, y px) whose blobs are ignored", "px", "tracking")
    track_include: list[Polygon] = _p([], "If given, only blobs inside these polygons are tracked",
                                      "px", "tracking")
    track_intensity_range: tuple[int, int] = _p((-1, -1), "Mean blob intensity allowed (-1, -1 = any)",
                                                "grey levels", "tracking")
    blob_split_algorithm: Literal["threshold", "fill", "none"] = _p(
        "threshold", "How merged animals are split: raise the threshold (then, where that fails, "
        "split from the predicted positions), only from the predicted positions (fill), or not "
        "at all", "", "tracking")
    blob_split_global_shrink_limit: float = _p(0.2, "Smallest share of a blob that splitting may "
                                               "keep in total", "fraction", "tracking", gt=0, le=1)

    # -- tracklets (consecutive segments) --------------------------------------------------------
    huge_timestamp_ends_segment: bool = _p(True, "End tracklets where the time between frames is "
                                           "too large", "", "tracklets")
    huge_timestamp_seconds: float = _p(0.2, "A gap between frames at least this long ends tracklets",
                                       "s", "tracklets", gt=0)
    track_end_segment_for_speed: bool = _p(True, "End a tracklet where an animal moves at >= 99% of "
                                           "track_max_speed", "", "tracklets")
    track_segment_max_length: float = _p(0.0, "Cut tracklets longer than this (0 = no limit)", "s",
                                         "tracklets", ge=0)

    # -- visual identification -------------------------------------------------------------------
    recognition_enable: bool = _p(True, "Allow visual identification", "", "identification")
    recognition_image_size: tuple[int, int] = _p((0, 0), "Width and height of the image of each "
                                                 "animal the network sees; [0, 0] = automatic: about "
                                                 "1.3 body lengths long and 1.5 body widths high, "
                                                 "at most 48 x 48 px in area (larger animals are "
                                                 "scaled down to fit)",
                                                 "px", "identification", advanced=False)
    recognition_image_scale: float = _p(1.0, "Scale applied before cutting the images (< 1 for big "
                                        "animals)", "", "identification", advanced=False, gt=0)
    recognition_normalization: Literal["posture", "moments", "none"] = _p(
        "posture", "How crops are aligned: posture = turned so the head points right (head from "
        "the motion) and straightened along the body's midline, so a bent animal looks as when "
        "straight; moments = only turned (orientation from image moments); none = as in the "
        "frame. TRex's legacy is read as moments", "", "identification")
    visual_identification_version: Literal["v118_3", "deep"] = _p(
        "v118_3", "The identification network's layout: v118_3 = TRex's; deep = each of its three "
        "convolution blocks made two 3x3 convolutions (zebrafish test_A with its documented "
        "sizes: uniqueness 0.943 -> 0.952, with none given 0.942 -> 0.945; ~1.2-1.7x the "
        "identification time on a CPU). Loaded weights keep the layout they were trained with",
        "", "identification")
    recognition_segment_add_factor: float = _p(1.5, "A segment is added only if every animal's mean "
                                               "probability exceeds this / N", "", "identification",
                                               gt=0)
    recognition_save_training_images: bool = _p(False, "Save the training images to "
                                                 "<output_dir>/<video>_validation_samples.npz", "",
                                                 "identification", advanced=False)
    gpu_accepted_uniqueness: float = _p(0.0, "Training stops once uniqueness reaches this; 0 = "
                                        "automatic, max(0.8, (N - 0.5) / N)", "", "identification",
                                        advanced=False, ge=0, le=1)
    gpu_max_epochs: int = _p(150, "Most epochs per training unit (0 = unlimited)", "epochs",
                             "identification", advanced=False, ge=0)
    gpu_min_iterations: int = _p(100, "Fewest training steps per epoch", "steps", "identification",
                                 ge=1)
    # TRex's default is 1e-4; 5e-4 learns the same identities in fewer epochs (README: where
    # napari-trex departs from TRex)
    gpu_learning_rate: float = _p(5e-4, "Learning rate of the Adam optimiser", "", "identification",
                                  gt=0, le=1)
    gpu_max_sample_gb: float = _p(2.0, "Most memory used by training images (counted as float32)",
                                  "GB", "identification", advanced=False, gt=0)
    gpu_enable_accumulation: bool = _p(True, "Add further global segments after the first training "
                                       "unit", "", "identification")
    gpu_accumulation_enable_final_step: bool = _p(True, "Train once more on all images at the end",
                                                  "", "identification")
    gpu_accumulation_max_segments: int = _p(15, "Most global segments tried during accumulation",
                                            "segments", "identification", ge=1)
    seed: int = _p(0, "Random seed of the identification network (initial weights, training "
                   "order): the same seed gives the same identities on a CPU", "", "identification",
                   ge=0)
    gpu_torch_device: Literal["automatic", "cuda", "mps", "cpu"] = _p(
        "automatic", "Where the network runs; automatic = CUDA, then Apple MPS, then CPU", "",
        "identification")
    auto_train: bool = _p(False, "Headless: identify after tracking, as --identify does", "",
                          "identification")
    auto_apply: bool = _p(False, "Headless: apply the network saved in the results folder (or "
                          "--weights) without training", "",
                          "identification")

    # -- manual corrections ----------------------------------------------------------------------
    manual_matches: dict[int, dict[int, int]] = _p(
        {}, "Forced assignments {frame: {identity: blob id}}", "", "corrections")
    manual_splits: dict[int, list[int]] = _p({}, "Blobs forced to be split {frame: [blob id, ...]}",
                                             "", "corrections")

    # -- validation ------------------------------------------------------------------------------
    @field_validator("blob_size_ranges", mode="before")
    @classmethod
    def _one_range_is_a_list(cls, value: Any) -> Any:
        # TRex accepts [0.1, 3] as well as [[0.1, 3], [5, 8]]
        if isinstance(value, list | tuple) and len(value) == 2 and all(
                isinstance(v, int | float) for v in value):
            return [tuple(value)]
        return value

    @field_validator("blob_size_ranges")
    @classmethod
    def _ranges_ordered(cls, value: list[Range]) -> list[Range]:
        if not value:
            raise ValueError("needs at least one [min, max] range")
        for lo, hi in value:
            _check_range(lo, hi)
        return value

    @field_validator("blob_size_range")
    @classmethod
    def _range_ordered(cls, value: Range) -> Range:
        _check_range(*value)
        return value

    @field_validator("recognition_image_size")
    @classmethod
    def _image_size(cls, value: tuple[int, int]) -> tuple[int, int]:
        if tuple(value) == (0, 0):
            return (0, 0)  # automatic, from the animals' size
        if min(value) < 16 or max(value) > 1024:
            raise ValueError("width and height must be between 16 and 1024 px (or [0, 0] for "
                             f"automatic), not {list(value)}")
        return value

    @field_validator("crop_offsets")
    @classmethod
    def _crop(cls, value: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        left, top, right, bottom = value
        if min(value) < 0 or left + right >= 1 or top + bottom >= 1:
            raise ValueError("fractions must be >= 0 and leave part of the frame "
                             f"(left + right < 1, top + bottom < 1), not {list(value)}")
        return value

    @field_validator("recognition_normalization", mode="before")
    @classmethod
    def _normalization(cls, value: Any) -> Any:
        # TRex's legacy mode: what napari-trex does for it is moments
        return "moments" if value == "legacy" else value

    @field_validator("analysis_range")
    @classmethod
    def _analysis_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        start, end = value
        if start < -1 or end < -1 or (end >= 0 and start > end):
            raise ValueError(f"[{start}, {end}]: give [start, end] with start <= end "
                             "(frame numbers from 0; -1 = the video's first / last frame)")
        return value

    @field_validator("track_intensity_range")
    @classmethod
    def _intensity(cls, value: tuple[int, int]) -> tuple[int, int]:
        if value != (-1, -1):
            _check_range(*value)
        return value

    @field_validator("track_ignore", "track_include")
    @classmethod
    def _polygons(cls, value: list[Polygon]) -> list[Polygon]:
        for polygon in value:
            if len(polygon) < 3:
                raise ValueError(f"a polygon needs at least 3 points, not {len(polygon)}")
        return value

    # -- construction from user input ------------------------------------------------------------
    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], base: Settings | None = None) -> Settings:
        """Settings from ``{name: value}`` (v1 or v2 names) on top of ``base`` (or the defaults).

        Raises :class:`SettingsError` naming the parameter for unknown names and bad values.
        """
        data = base.model_dump() if base is not None else {}
        data.update(canonical_names(values))
        return cls.validated(data)

    @classmethod
    def validated(cls, data: Mapping[str, Any]) -> Settings:
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise SettingsError(_explain(exc)) from None

    def updated(self, **values: Any) -> Settings:
        """A copy with some parameters changed (validated, v2 names accepted)."""
        return Settings.from_mapping(values, base=self)

    def changed(self) -> dict[str, Any]:
        """Only the parameters that differ from the defaults."""
        default = Settings()
        return {name: value for name, value in self.model_dump().items()
                if value != getattr(default, name)}

    # -- derived values the pipeline needs ---------------------------------------------------------
    def pixel_size_cm(self, video_width: int) -> float:
        """cm per pixel: ``cm_per_pixel`` if set, else ``meta_real_width / video_width`` (TRex)."""
        return self.cm_per_pixel if self.cm_per_pixel > 0 else self.meta_real_width / video_width

    def guessed_default(self, name: str) -> bool:
        """Whether ``name`` (an area or speed in cm) is left at its default while the scale is
        guessed (``cm_per_pixel`` 0): a default in cm then says nothing about this video's
        animals, so where the video shows that it does not fit, the tracking measures the value
        instead and says so. A value the user set, or any value on a calibrated scale, is only
        warned about."""
        return self.cm_per_pixel <= 0 and getattr(self, name) == getattr(type(self)(), name)

    def measured_default(self, name: str) -> bool:
        """Whether ``name`` is a default the tracking may replace by what it measures: an area
        or speed in cm on a guessed scale (:meth:`guessed_default`), the threshold (grey levels,
        no scale) wherever both it and ``track_threshold`` are left at their defaults."""
        if name == "threshold":
            default = type(self)()
            return (self.threshold, self.track_threshold) == (default.threshold, default.track_threshold)
        return self.guessed_default(name)

    def accepted_uniqueness(self, n_individuals: int) -> float:
        """``gpu_accepted_uniqueness``, or TRex's automatic value max(0.8, (N - 0.5) / N) when 0."""
        if self.gpu_accepted_uniqueness > 0:
            return self.gpu_accepted_uniqueness
        return max(0.8, (n_individuals - 0.5) / max(1, n_individuals))

    # -- files ---------------------------------------------------------------------------------------
    def to_toml(self, only_changed: bool = False) -> str:
        """The settings as TOML, each parameter preceded by its description and unit."""
        import tomli_w

        values = self.changed() if only_changed else self.model_dump()
        lines = ["# napari-trex settings (TRex parameter names). Load with --settings FILE.toml", ""]
        for name, value in values.items():
            info = parameter_info(name)
            unit = f" [{info['unit']}]" if info["unit"] else ""
            lines.append(f"# {info['description']}{unit}")
            lines.append(tomli_w.dumps({name: _tomlable(value)}).rstrip("\n"))
        return "\n".join(lines) + "\n"

    def save(self, path: str | os.PathLike, only_changed: bool = False) -> Path:
        """Write the settings as TOML (atomically: a crash never leaves half a file)."""
        target = Path(path)
        atomic_write_text(target, self.to_toml(only_changed=only_changed))
        return target

    @classmethod
    def load(cls, path: str | os.PathLike, strict: bool = True) -> Settings:
        """Read a ``.toml`` file (ours) or a TRex ``.settings`` file (anything else)."""
        p = Path(path).expanduser()
        if not p.is_file():
            raise SettingsError(f"settings file not found: {p}")
        if p.suffix.lower() == ".toml":
            try:
                data = tomllib.loads(p.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise SettingsError(f"{p.name} is not valid TOML: {exc}") from None
            # files of earlier versions may name parameters that are gone: they did nothing
            return cls.from_mapping({k: v for k, v in data.items() if k not in NOT_IMPLEMENTED})
        settings, _ = import_trex_settings(p, strict=strict)
        return settings


# =============================================================================================
# names, aliases, descriptions
# =============================================================================================

V2_ALIASES: dict[str, str] = {
    "accumulation_sufficient_uniqueness": "gpu_accepted_uniqueness",
    "accumulation_enable": "gpu_enable_accumulation",
    "accumulation_enable_final_step": "gpu_accumulation_enable_final_step",
    "accumulation_max_tracklets": "gpu_accumulation_max_segments",
    "accumulation_tracklet_add_factor": "recognition_segment_add_factor",
    "individual_image_size": "recognition_image_size",
    "individual_image_scale": "recognition_image_scale",
    "individual_image_normalization": "recognition_normalization",
    "visual_identification_save_images": "recognition_save_training_images",
    "tracklet_max_length": "track_segment_max_length",
    "tracklet_punish_speeding": "track_end_segment_for_speed",
    "tracklet_punish_timedelta": "huge_timestamp_ends_segment",
    "track_size_filter": "blob_size_ranges",
    "detect_size_filter": "blob_size_range",
    "match_min_probability": "matching_probability_threshold",
    "detect_threshold_is_absolute": "enable_absolute_difference",
}
"""TRex v2 name → the v1 name used here (from TRex's own deprecation table)."""


def parameter_names() -> list[str]:
    return list(Settings.model_fields)


def parameter_info(name: str) -> dict[str, Any]:
    """Default, unit, description, section and 'advanced' flag of one parameter (for widgets)."""
    field = Settings.model_fields[canonical_name(name)]
    extra = field.json_schema_extra or {}
    return {"name": canonical_name(name), "default": field.default, "unit": extra.get("unit", ""),
            "description": field.description or "", "section": extra.get("section", ""),
            "advanced": extra.get("advanced", True)}


# TRex parameters napari-trex does not implement: a TRex .settings file naming them still
# imports (with a notice), an older napari-trex TOML file still loads, `--set` says why not.
NOT_IMPLEMENTED: dict[str, str] = {
    **dict.fromkeys(("calculate_posture", "outline_approximate", "outline_resample",
                     "outline_curvature_range_ratio", "midline_resolution",
                     "midline_stiff_percentage", "midline_invert"),
                    "no outline posture is computed; the midline that straightens the crops "
                    "(recognition_normalization = posture) is fitted to each animal's pixels"),
    "correct_luminance": "detection thresholds the difference to the background; identification "
                         "images are always evened out for the light (samples.light_gain)",
    "equalize_histogram": "thresholding works on the difference to the background",
    "match_mode": "animals are always matched to blobs optimally (Hungarian)",
    "blob_split_max_shrink": "splitting is limited by blob_split_global_shrink_limit",
    "recognition_border": "every tracked animal is used for identification",
    "recognition_shapes": "every tracked animal is used for identification",
    "recognition_save_progress_images": "the uniqueness of every epoch is in identification.json",
    "gpu_max_cache": "prediction batches are sized by gpu_max_sample_gb",
    "gpu_min_elements": "prediction batches are sized by gpu_max_sample_gb",
    **dict.fromkeys(("auto_train_dont_apply", "auto_train_on_startup", "auto_quit",
                     "auto_no_results", "auto_no_tracking_data"),
                    "the command line always saves the results and exits with a status"),
}


def canonical_name(name: str) -> str:
    """The v1 name for a v1 or v2 name; :class:`SettingsError` with a suggestion otherwise."""
    key = name.strip()
    if key in Settings.model_fields:
        return key
    if key in V2_ALIASES:
        return V2_ALIASES[key]
    if key in NOT_IMPLEMENTED:
        raise SettingsError(f"'{key}' is a TRex parameter napari-trex does not implement "
                            f"({NOT_IMPLEMENTED[key]})")
    known = list(Settings.model_fields) + list(V2_ALIASES)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else "; see `napari-trex params` for all names"
    raise SettingsError(f"unknown parameter '{key}'{hint}")


def canonical_names(values: Mapping[str, Any]) -> dict[str, Any]:
    return {canonical_name(k): v for k, v in values.items()}


def _check_range(lo: float, hi: float) -> None:
    if lo < 0 or hi < 0:
        raise ValueError(f"sizes cannot be negative, got [{lo}, {hi}]")
    if lo > hi:
        raise ValueError(f"min must not be larger than max, got [{lo}, {hi}]")


def _explain(exc: ValidationError) -> str:
    """One line per problem, always starting with the parameter's name."""
    parts = []
    for error in exc.errors():
        loc = [str(x) for x in error.get("loc", ())]
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        if not loc:
            parts.append(message)
            continue
        if error.get("type") == "extra_forbidden":
            parts.append(_unknown_name_message(loc[0]))
            continue
        # our own validators already show the value; pydantic's messages do not
        shown = "" if error.get("type") == "value_error" else f" (got {error.get('input')!r})"
        parts.append(f"{loc[0]}: {message}{shown}")
    return "; ".join(parts)


def _unknown_name_message(name: str) -> str:
    try:
        canonical_name(name)
    except SettingsError as exc:
        return str(exc)
    return f"unknown parameter '{name}'"


def _tomlable(value: Any) -> Any:
    """TOML has no tuples, no None and only string keys."""
    if isinstance(value, dict):
        return {str(k): _tomlable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_tomlable(v) for v in value]
    return value


# =============================================================================================
# TRex .settings files
# =============================================================================================


def parse_trex_value(text: str) -> Any:
    """A TRex value: numbers, true/false, "strings", [lists], {maps}; bare words are strings."""
    raw = text.strip()
    if not raw:
        return ""
    pythonic = _replace_words(raw, {"true": "True", "false": "False", "null": "None"})
    try:
        return ast.literal_eval(pythonic)
    except (ValueError, SyntaxError):
        return raw.strip("'\"")


def _replace_words(text: str, words: Mapping[str, str]) -> str:
    """Replace whole words outside quoted strings."""
    import re

    out = []
    for part in re.split(r'("(?:[^"\\]|\\.)*")', text):
        if part.startswith('"') and part.endswith('"') and len(part) >= 2:
            out.append(part)
            continue
        for word, repl in words.items():
            part = re.sub(rf"\b{word}\b", repl, part)
        out.append(part)
    return "".join(out)


def read_trex_settings(source: str | os.PathLike) -> dict[str, Any]:
    """The ``name = value`` pairs of a TRex ``.settings`` file, values parsed, names untouched."""
    p = Path(source)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise SettingsError(f"cannot read settings file {p}: {exc.strerror}") from None
    values: dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if "=" not in stripped:
            raise SettingsError(f"{p.name} line {number}: expected 'name = value', got {stripped!r}")
        name, value = stripped.split("=", 1)
        value = _strip_comment(value)
        values[name.strip()] = parse_trex_value(value)
    return values


def _strip_comment(value: str) -> str:
    quoted = False
    for i, ch in enumerate(value):
        if ch == '"':
            quoted = not quoted
        elif ch == "#" and not quoted:
            return value[:i]
    return value


def import_trex_settings(source: str | os.PathLike, strict: bool = True,
                         base: Settings | None = None) -> tuple[Settings, list[str]]:
    """Import a TRex ``.settings`` file (v1 or v2 names).

    TRex files often carry GUI or conversion parameters napari-trex does not use. With
    ``strict`` (the default) they are an error listing each unknown name with the closest
    known one; with ``strict=False`` they are skipped and returned so the caller can say so.
    """
    raw = read_trex_settings(source)
    known: dict[str, Any] = {}
    unknown: list[str] = []
    problems: list[str] = []
    for name, value in raw.items():
        if name.strip() in NOT_IMPLEMENTED:
            unknown.append(name.strip())  # skipped with a notice, never an error
            continue
        try:
            known[canonical_name(name)] = value
        except SettingsError as exc:
            unknown.append(name)
            problems.append(str(exc))
    if problems and strict:
        raise SettingsError(f"{Path(source).name}: " + "; ".join(problems)
                            + " (use --ignore-unknown to skip unknown names)")
    return Settings.from_mapping(known, base=base), unknown


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """``["track_max_speed=20", "blob_size_ranges=[[0.1,3]]"]`` → a dict (command line --set)."""
    values: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise SettingsError(f"--set expects NAME=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        values[canonical_name(name)] = parse_trex_value(value)
    return values
