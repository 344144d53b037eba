"""Parameter widgets built from the settings model (TRex names, units, tooltips).

Every panel shows parameters the same way: the label is TRex's name (what the docs and
forum posts use), the tooltip is the description and unit from :mod:`core.settings`, and
values that are lists (``blob_size_ranges``, ``recognition_image_size``) are edited as text
like ``[[0.1, 3.0]]``, parsed exactly as ``--set`` on the command line parses them.
"""

# no `from __future__ import annotations`: magicgui reads annotations at run time
import json
import typing
from typing import Any

from annotated_types import Ge, Gt, Le, Lt
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, LineEdit, SpinBox

from ...core.settings import Settings, parameter_info, parse_assignments


def _bounds(name: str) -> tuple[float | None, float | None]:
    lo = hi = None
    for m in Settings.model_fields[name].metadata:
        if isinstance(m, Ge | Gt):
            lo = float(m.ge if isinstance(m, Ge) else m.gt)
        elif isinstance(m, Le | Lt):
            hi = float(m.le if isinstance(m, Le) else m.lt)
    return lo, hi


def _as_text(value: Any) -> str:
    return json.dumps(value if not isinstance(value, tuple) else list(value),
                      default=lambda v: list(v) if isinstance(v, tuple) else str(v))


def parameter_widget(name: str, value: Any) -> Any:
    """A magicgui widget for parameter ``name`` holding ``value``."""
    info = parameter_info(name)
    unit = f" [{info['unit']}]" if info["unit"] else ""
    tooltip = f"{name}{unit}: {info['description']}"
    annotation = Settings.model_fields[name].annotation
    common = {"name": name, "label": name, "tooltip": tooltip}
    lo, hi = _bounds(name)
    if annotation is bool:
        return CheckBox(value=bool(value), **common)
    if typing.get_origin(annotation) is typing.Literal:
        return ComboBox(value=value, choices=list(typing.get_args(annotation)), **common)
    if annotation is int:
        return SpinBox(value=int(value), min=int(lo) if lo is not None else -(10**9),
                       max=int(hi) if hi is not None else 10**9, **common)
    if annotation is float:
        return FloatSpinBox(value=float(value), min=lo if lo is not None else -1e9,
                            max=hi if hi is not None else 1e9, step=_step(float(value)), **common)
    if annotation is str:
        return LineEdit(value=str(value), **common)
    return LineEdit(value=_as_text(value), **common)  # lists, tuples, polygons


def _step(value: float) -> float:
    """Arrow step of a float box: about a tenth of the value (so 0.0123 keeps its digits)."""
    import math

    if value == 0:
        return 0.001
    return 10 ** (math.floor(math.log10(abs(value))) - 1)


def read_value(widget: Any) -> Any:
    """The Python value of a parameter widget (text fields parsed like ``--set``)."""
    if isinstance(widget, LineEdit) and Settings.model_fields[widget.name].annotation is not str:
        return parse_assignments([f"{widget.name}={widget.value}"])[widget.name]
    return widget.value


def write_value(widget: Any, value: Any) -> None:
    if isinstance(widget, LineEdit) and Settings.model_fields[widget.name].annotation is not str:
        widget.value = _as_text(value)
    else:
        widget.value = value


class ParameterForm(Container):
    """The main parameters, then the others behind a "show advanced parameters" box."""

    def __init__(self, main: list[str], advanced: list[str], settings: Settings) -> None:
        super().__init__(labels=True)
        self.display_scale = {}
        self.main = Container(widgets=[parameter_widget(n, getattr(settings, n)) for n in main],
                              labels=True)
        self.advanced = Container(widgets=[parameter_widget(n, getattr(settings, n))
                                           for n in advanced], labels=True)
        self.show_advanced = CheckBox(value=False, text="show advanced parameters",
                                      name="show_advanced")
        self.show_advanced.changed.connect(lambda on: setattr(self.advanced, "visible", on))
        self.advanced.visible = False
        self.extend([self.main, self.show_advanced, self.advanced])
        self.main.margins = self.advanced.margins = (0, 0, 0, 0)

    def fields(self) -> list[Any]:
        return list(self.main) + list(self.advanced)

    display_scale: dict[str, float] = {}  # name -> factor: shown value x factor = setting's value

    def set_display_units(self, scales: dict[str, float], units: dict[str, str]) -> None:
        """Show some fields in other units (e.g. px instead of cm until calibrated): ``scales``
        turns a shown value into the setting's value, ``units`` names the unit shown."""
        values = {name: read_value(self.field(name)) for name in set(scales) | set(self.display_scale)}
        true = {name: _scaled(v, self.display_scale.get(name, 1.0)) for name, v in values.items()}
        self.display_scale = dict(scales)
        for name, value in true.items():
            widget = self.field(name)
            shown = _scaled(value, 1.0 / self.display_scale.get(name, 1.0))
            if isinstance(widget, FloatSpinBox):
                widget.step = _step(float(shown))
            write_value(widget, shown)
            widget.label = f"{name} [{units[name]}]" if name in units else name

    def field(self, name: str) -> Any:
        return next(w for w in self.fields() if w.name == name)

    def values(self) -> dict[str, Any]:
        """``{name: value}`` of every field (raises SettingsError naming a bad text field)."""
        return {w.name: _scaled(read_value(w), self.display_scale.get(w.name, 1.0))
                for w in self.fields()}

    def settings(self, base: Settings) -> Settings:
        """``base`` with this form's values (validated: SettingsError names the parameter)."""
        return Settings.from_mapping(self.values(), base=base)

    def display(self, settings: Settings) -> None:
        """Show the values of ``settings`` in the fields."""
        for w in self.fields():
            self.show_value(w.name, getattr(settings, w.name))

    def show_value(self, name: str, value: Any) -> None:
        """Show one setting's ``value`` in its field (in the units the field shows)."""
        write_value(self.field(name), _scaled(value, 1.0 / self.display_scale.get(name, 1.0)))


def _scaled(value: Any, factor: float) -> Any:
    """``value`` (a number, or nested lists of numbers) times ``factor``."""
    if factor == 1.0 or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value) * factor
    if isinstance(value, list | tuple):
        return [_scaled(v, factor) for v in value]
    return value


def wrapping(label: Any) -> Any:
    """A magicgui Label whose long text wraps at the panel's width instead of widening the
    panel (or being clipped): it never sets the dock's minimum width."""
    from qtpy.QtWidgets import QSizePolicy

    label.native.setWordWrap(True)
    label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    return label
