"""Every key napari-trex binds, in one place (listed in the Corrections panel).

Keys are bound on the viewer and on the result layers (a layer's own keys win while it is
selected, and napari's Points layer uses the digits for its modes). None of them replaces one
of napari's viewer-wide defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# action: (key, what it does)
KEYMAP: dict[str, tuple[str, str]] = {
    **{f"assign_{k}": (str(k), f"give the selected animal identity {k}") for k in range(10)},
    "split": ("Shift-X", "split the selected tracklet at the current frame"),
    "remove": ("Shift-D", "the selected tracklet is not an animal"),
    "previous_end": ("Shift-Left", "previous tracklet start/end of the selected animal"),
    "next_end": ("Shift-Right", "next tracklet start/end of the selected animal"),
    "next_review": ("Shift-N", "next tracklet to review (least confident first)"),
    "undo": ("Control-Z", "undo the last correction"),
    "redo": ("Control-Shift-Z", "redo"),
}


def describe() -> str:
    """The key list shown in the panel."""
    digits = "0–9: give the selected animal that identity"
    others = [f"{key}: {text}" for action, (key, text) in KEYMAP.items() if not action.startswith("assign_")]
    return "\n".join([digits, *others])


def bind(target: Any, actions: dict[str, Callable[[], Any]]) -> None:
    """Bind ``actions`` (action name → function of no arguments) on a viewer or layer."""
    for action, function in actions.items():
        key = KEYMAP[action][0]
        target.bind_key(key, _wrap(function), overwrite=True)


def _wrap(function: Callable[[], Any]) -> Callable[[Any], None]:
    def handler(_: Any) -> None:
        function()

    return handler
