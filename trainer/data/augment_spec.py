"""`data.augment` read and checked: which random transforms of the training batches a run asks
for, each with its strength. Plain Python, so that the config can check it before TensorFlow is
imported; the transforms themselves are `trainer.data.augment_ops`.

An item is a name (its default strength) or a mapping of names to strengths, in YAML either
`- rotate` or `- rotate: 15` (`--set 'data.augment=[flip_left_right, rotate: 15]'`). The seeds'
three kinds, `rot90`, `flip_left_right` and `flip_up_down`, take no strength (`true` is allowed),
and draw exactly as they always did.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from trainer.errors import UserError


@dataclass(frozen=True)
class Kind:
    default: Optional[float]  # None: takes no strength
    high: float = 0.0  # the largest strength
    meaning: str = ""
    classification_only: bool = False


KINDS: dict[str, Kind] = {
    "rot90": Kind(None, meaning="a random multiple of 90 degrees (square images)"),
    "flip_left_right": Kind(None, meaning="mirrored left to right, half of the samples"),
    "flip_up_down": Kind(None, meaning="mirrored top to bottom, half of the samples"),
    "translate": Kind(0.1, 0.5, "shifted by up to this fraction of the height and of the width"),
    "zoom": Kind(0.1, 0.5, "scaled by a factor in [1 - s, 1 + s]"),
    "rotate": Kind(10.0, 180.0, "rotated by up to this many degrees either way"),
    "brightness": Kind(0.2, 10.0, "a value in [-s, s] times the image's standard deviation added"),
    "contrast": Kind(0.2, 1.0, "the distance from the image's mean per channel multiplied by a "
                     "factor in [1 - s, 1 + s]"),
    "noise": Kind(0.05, 10.0, "Gaussian noise of s times the image's standard deviation added"),
    "mixup": Kind(0.2, 10.0, "blended with another sample of the batch, weight "
                  "lambda ~ Beta(s, s), labels blended alike", classification_only=True),
    "cutmix": Kind(1.0, 10.0, "a box of another sample of the batch pasted in, area 1 - lambda "
                   "with lambda ~ Beta(s, s), labels weighted by the area pasted",
                   classification_only=True),
}
# Where the geometric and photometric transforms are applied; the label-mixing ones come last.
GEOMETRIC = ("translate", "zoom", "rotate")
MIXING = ("mixup", "cutmix")


def described() -> str:
    """The kinds for the config reference: name (default strength): meaning."""
    return "; ".join(f"`{name}`" + ("" if k.default is None else f" ({k.default:g}, at most "
                                    f"{k.high:g})") + f": {k.meaning}" for name, k in KINDS.items())


def parse(items: Iterable[Any], key: str = "data.augment", source: str = "config"
          ) -> tuple[tuple[str, float], ...]:
    """(name, strength) pairs in the order given; a strength of 0 is kept (the identity). Each
    name once. Raises UserError on an unknown name or a strength out of range."""
    pairs: list[tuple[str, float]] = []
    for item in items:
        if isinstance(item, tuple) and len(item) == 2 and item[0] in KINDS:
            pairs.append((item[0], float(item[1])))  # already parsed
            continue
        if isinstance(item, str):
            entries = [(item, None)]
        elif isinstance(item, dict):
            entries = list(item.items())
        else:
            raise UserError(f"invalid value {item!r} for '{key}', {source}, expected a name or "
                            "`name: strength`")
        for name, strength in entries:
            pairs.append((name, _strength(name, strength, key, source)))
    names = [n for n, _ in pairs]
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:
        raise UserError(f"'{twice}' is given twice, '{key}', {source}, expected each kind once")
    return tuple(pairs)


def _strength(name: Any, value: Any, key: str, source: str) -> float:
    kind = KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        near = difflib.get_close_matches(str(name), list(KINDS), n=1, cutoff=0.5)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise UserError(f"invalid value {name!r} for '{key}', {source}, expected one of "
                        f"{', '.join(KINDS)}{hint}")
    if kind.default is None:
        if value is not None and value is not True:
            raise UserError(f"invalid value {value!r} for '{key}' ({name}), {source}, expected "
                            f"no strength ({name} takes none)")
        return 1.0
    if value is None:
        return kind.default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            0 <= value <= kind.high):
        raise UserError(f"invalid value {value!r} for '{key}' ({name}), {source}, expected a "
                        f"strength from 0 to {kind.high:g}")
    return float(value)


def check_task(pairs: Iterable[tuple[str, float]], task: str, source: str) -> None:
    """Mixup and cutmix blend class labels: classification only."""
    for name, _ in pairs:
        if KINDS[name].classification_only and task != "classification":
            raise UserError(f"data.augment has {name}, {source}, expected no {name} for "
                            f"task={task} (it blends class labels; classification only)")


def mixes_labels(pairs: Iterable[tuple[str, float]]) -> bool:
    """Whether the training labels become class probabilities (mixup or cutmix)."""
    return any(name in MIXING for name, _ in pairs)
