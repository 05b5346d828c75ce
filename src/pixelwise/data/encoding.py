"""How mask files encode classes: declared, never guessed.

Three encodings cover the data sets the project reads:

- ``index``: pixel values are class indices (CamVid's ``trainannot/``); raw values that mean
  "ignore" are declared with ``ignore_values`` (CamVid's 11 = void).
- ``values``: a declared value → class table, e.g. ``{0: 0, 255: 1}`` for binary 0/255 masks
  (ISBI 2012); a value mapped to ``ignore_index`` is ignored.
- ``palette``: RGB masks, the colour at position ``i`` of the palette is class ``i``; palette
  positions at or beyond ``num_classes`` are ignored (CamVid's black void colour).

Every decoded mask holds values in ``[0, num_classes)`` or ``ignore_index``; anything else is a
one-line error naming the file and the offending values. :meth:`MaskEncoding.encode` is the
inverse: classes back to the values a mask file of the encoding holds (predicted masks written
in the data set's own encoding).

An encoding has one spelling in text, the TOML inline table of a run file's ``[data]``
(:meth:`MaskEncoding.to_toml`)::

    encoding = { kind = "values", value_map = { "0" = 0, "255" = 1 } }

Every message that suggests an encoding shows it in this spelling.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np

from pixelwise._checks import check_choice, check_class_names, did_you_mean, message
from pixelwise._toml import toml_value
from pixelwise.data._io import open_pil

KINDS = ("index", "values", "palette")
RGB = tuple[int, int, int]
_MAX_SHOWN = 8


def format_values(values: Sequence[object], limit: int = _MAX_SHOWN) -> str:
    """Show at most ``limit`` values, then how many more there are."""
    shown = ", ".join(str(v) for v in list(values)[:limit])
    more = len(values) - limit
    return f"[{shown}, … {more} more]" if more > 0 else f"[{shown}]"


def _classes_in(pairs: Sequence[tuple[int, int]], ignore_index: int) -> int:
    """A value map's default ``num_classes``: its largest class (not ``ignore_index``) + 1."""
    return max((c for _, c in pairs if c != ignore_index), default=0) + 1


@dataclasses.dataclass(frozen=True)
class MaskEncoding:
    """How the values of a mask file map to classes.

    Build one with :meth:`index`, :meth:`values` or :meth:`palette` rather than directly.

    Attributes:
        kind: ``"index"``, ``"values"`` or ``"palette"``.
        num_classes: K, the number of classes; decoded masks hold ``[0, K)`` or ``ignore_index``.
        ignore_index: The target value for pixels excluded from loss and metrics.
        value_map: Sorted ``(raw value, class)`` pairs: the whole table for ``values``, the
            raw values mapped to ``ignore_index`` for ``index``; unused for ``palette``.
        colors: The palette's RGB colours, position = class; only for ``palette``.
    """

    kind: Literal["index", "values", "palette"]
    num_classes: int
    ignore_index: int = 255
    value_map: tuple[tuple[int, int], ...] = ()
    colors: tuple[RGB, ...] = ()

    def __post_init__(self) -> None:
        check_choice("mask encoding kind", self.kind, KINDS)
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int):
            raise TypeError(message("num_classes", "be an int", repr(self.num_classes)))
        if self.num_classes < 1:
            raise ValueError(message("num_classes", "be >= 1", self.num_classes))
        if 0 <= self.ignore_index < self.num_classes:
            raise ValueError(
                message(
                    "ignore_index",
                    f"lie outside the classes [0, {self.num_classes})",
                    self.ignore_index,
                    "use 255 (the default) or -100",
                )
            )
        for raw, cls in self.value_map:
            if not (0 <= cls < self.num_classes or cls == self.ignore_index):
                raise ValueError(
                    message(
                        f"the class of mask value {raw}",
                        f"be in [0, {self.num_classes}) or ignore_index {self.ignore_index}",
                        cls,
                        "fix the value map or raise num_classes",
                    )
                )
        if self.kind == "palette" and len(set(self.colors)) != len(self.colors):
            raise ValueError(message("palette colours", "be distinct", list(self.colors)))

    @classmethod
    def index(
        cls, num_classes: int, *, ignore_values: Sequence[int] = (), ignore_index: int = 255
    ) -> MaskEncoding:
        """Pixel values are classes; ``ignore_values`` are raw values to ignore.

        A raw value equal to ``ignore_index`` is accepted only when listed in ``ignore_values``,
        so a binary 0/255 mask is never silently read as "background and ignore".
        """
        pairs = tuple((int(v), ignore_index) for v in sorted(set(ignore_values)))
        return cls("index", num_classes, ignore_index, value_map=pairs)

    @classmethod
    def values(
        cls,
        table: Mapping[int, int],
        *,
        num_classes: int | None = None,
        ignore_index: int = 255,
    ) -> MaskEncoding:
        """A declared raw value → class table, e.g. ``{0: 0, 255: 1}``; nothing else is accepted.

        ``num_classes`` defaults to the largest class in the table plus one.
        """
        if not table:
            raise ValueError(message("value map", "have at least one entry", dict(table)))
        pairs = tuple(sorted((int(k), int(v)) for k, v in table.items()))
        if num_classes is None:
            num_classes = _classes_in(pairs, ignore_index)
        return cls("values", num_classes, ignore_index, value_map=pairs)

    @classmethod
    def palette(
        cls,
        colors: Sequence[Sequence[int]] | str | Path,
        *,
        num_classes: int | None = None,
        ignore_index: int = 255,
    ) -> MaskEncoding:
        """RGB masks: palette colour ``i`` is class ``i``; positions >= ``num_classes`` are ignored.

        Args:
            colors: A list of RGB triples, or a palette image (one pixel per colour, read in
                row order; a trailing run of a repeated colour is padding and dropped).
            num_classes: Defaults to the number of colours.
            ignore_index: Target value for the ignored colours.
        """
        palette = read_palette(colors) if isinstance(colors, str | Path) else _rgb_list(colors)
        if num_classes is None:
            num_classes = len(palette)
        return cls("palette", num_classes, ignore_index, colors=palette)

    @classmethod
    def from_config(cls, config: MaskEncoding | Mapping[str, object]) -> MaskEncoding:
        """Build from a config table, e.g. ``{"kind": "values", "value_map": {"0": 0, "255": 1}}``.

        Keys: ``kind``; ``num_classes``; ``ignore_index``; ``ignore_values`` (index);
        ``value_map`` (values; TOML keys are strings); ``palette`` (a list or a file path).
        """
        if isinstance(config, MaskEncoding):
            return config
        if not isinstance(config, Mapping):
            raise TypeError(
                message(
                    "encoding",
                    "be a MaskEncoding or a table",
                    type(config).__name__,
                    f"e.g. {EXAMPLE.to_toml()}",
                )
            )
        allowed = {"kind", "num_classes", "ignore_index", "ignore_values", "value_map", "palette"}
        for key in config:
            if key not in allowed:
                raise ValueError(
                    message("encoding key", "be known", repr(key), did_you_mean(key, allowed))
                )
        kind = check_choice("encoding kind", str(config.get("kind", "")), KINDS)
        common = {
            "ignore_index": _integer("encoding ignore_index", config.get("ignore_index", 255))
        }
        num_classes = config.get("num_classes")
        if num_classes is not None:
            num_classes = _integer("encoding num_classes", num_classes)
        if kind == "index":
            if num_classes is None:
                raise ValueError(message("encoding num_classes", "be given", "nothing"))
            ignore_values = config.get("ignore_values", ())
            if not isinstance(ignore_values, list | tuple):
                raise ValueError(
                    message(
                        "encoding ignore_values", "be a list of mask values", repr(ignore_values)
                    )
                )
            ignore_values = [_integer("encoding ignore_values", v) for v in ignore_values]
            return cls.index(num_classes, ignore_values=ignore_values, **common)
        if kind == "values":
            value_map = config.get("value_map", {})
            if not isinstance(value_map, Mapping):
                raise ValueError(
                    message(
                        "encoding value_map",
                        "be a table of mask value = class",
                        repr(value_map),
                        'e.g. { "0" = 0, "255" = 1 }',
                    )
                )
            table = {
                _integer("encoding value_map key", k, text=True): _integer(
                    f"encoding value_map[{k!r}]", v
                )
                for k, v in value_map.items()
            }
            return cls.values(table, num_classes=num_classes, **common)
        return cls.palette(config.get("palette", ()), num_classes=num_classes, **common)

    def to_config(self) -> dict[str, object]:
        """A TOML- and JSON-friendly table that :meth:`from_config` reads back."""
        out: dict[str, object] = {
            "kind": self.kind,
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
        }
        if self.kind == "index":
            out["ignore_values"] = [raw for raw, _ in self.value_map]
        elif self.kind == "values":
            out["value_map"] = {str(raw): cls for raw, cls in self.value_map}
        else:
            out["palette"] = [list(c) for c in self.colors]
        return out

    def to_toml(self) -> str:
        """The encoding in its one spelling: the TOML inline table a run file's ``[data]`` takes
        after ``encoding =`` (and ``--encoding`` and ``--set data.encoding=`` take), keys at
        their defaults left out, e.g. ``{ kind = "values", value_map = { "0" = 0, "255" = 1 } }``.

        ``MaskEncoding.from_config(tomllib.loads(f"encoding = {text}")["encoding"])`` reads it
        back to an equal encoding.
        """
        table = self.to_config()
        defaults = {"ignore_index": 255, "ignore_values": []}
        if self.kind == "values":
            defaults["num_classes"] = _classes_in(self.value_map, self.ignore_index)
        elif self.kind == "palette":
            defaults["num_classes"] = len(self.colors)
        # kind first, then what the kind is about, then the numbers that differ from defaults.
        order = ("kind", "value_map", "palette", "num_classes", "ignore_values", "ignore_index")
        kept = {k: table[k] for k in order if k in table and table[k] != defaults.get(k, ...)}
        return toml_value(kept)

    @property
    def channels(self) -> int:
        """Channels a mask file must have: 3 for palette masks, else 1."""
        return 3 if self.kind == "palette" else 1

    @cached_property
    def _lookup(self) -> tuple[np.ndarray, np.ndarray]:
        # One table for every 16-bit value: decoding is a gather, validation a second one.
        target = np.zeros(65536, dtype=np.int64)
        valid = np.zeros(65536, dtype=bool)
        if self.kind == "index":
            target[: self.num_classes] = np.arange(min(self.num_classes, 65536))
            valid[: self.num_classes] = True
        for raw, cls in self.value_map:
            if 0 <= raw < 65536:
                target[raw], valid[raw] = cls, True
        return target, valid

    def decode(self, raw: np.ndarray, source: str = "mask") -> np.ndarray:
        """Map raw mask values to classes, raising on any undeclared value.

        Args:
            raw: (H, W) integer values, or (H, W, 3) uint8 colours for a palette encoding.
            source: Names the file in error messages.

        Returns:
            (H, W) int64 in ``[0, num_classes)`` or ``ignore_index``.

        Shape:
            raw: (H, W) or (H, W, 3) → (H, W).
        """
        if self.kind == "palette":
            return self._decode_colors(raw, source)
        if raw.dtype.kind not in "iub" or (raw.size and (raw.min() < 0 or raw.max() > 65535)):
            bad = raw.dtype if raw.dtype.kind not in "iub" else f"values up to {raw.max()}"
            raise ValueError(message(f"mask {source}", "hold integers in [0, 65535]", bad))
        target, valid = self._lookup
        flat = raw.astype(np.int64, copy=False)
        ok = valid[flat]
        if not ok.all():
            raise ValueError(
                self._bad_values_message(np.unique(flat[~ok]), np.unique(flat), source)
            )
        return target[flat]

    @cached_property
    def _inverse(self) -> tuple[np.ndarray, np.ndarray]:
        """(values, known): row c the mask value class c is written as, row K that of
        ``ignore_index``; ``known`` says which rows the encoding has a value for."""
        k = self.num_classes
        known = np.zeros(k + 1, dtype=bool)
        if self.kind == "palette":
            colors = np.asarray(self.colors, dtype=np.uint8).reshape(-1, 3)
            table = np.zeros((k + 1, 3), dtype=np.uint8)
            n = min(k, len(colors))
            table[:n], known[:n] = colors[:n], True
            if len(colors) > k:  # the first colour past the classes is an ignored one
                table[k], known[k] = colors[k], True
            return table, known
        target, valid = self._lookup
        raws = np.flatnonzero(valid)  # ascending: a class's first value is its smallest
        rows = np.where(target[raws] == self.ignore_index, k, target[raws])
        found, first = np.unique(rows, return_index=True)
        table = np.zeros(k + 1, dtype=np.int64)
        table[found], known[found] = raws[first], True
        return table.astype(np.uint8 if table.max() < 256 else np.uint16), known

    def encode(self, classes: np.ndarray) -> np.ndarray:
        """Classes as the values a mask file of this encoding holds: the inverse of
        :meth:`decode`, ``decode(encode(c)) == c``.

        A class is written as its smallest raw value (values, index) or its palette colour;
        ``ignore_index`` as the smallest value mapped to it (the first palette colour past the
        classes), where the encoding has one.

        Args:
            classes: Integer classes in ``[0, num_classes)`` or ``ignore_index`` (an array or a
                CPU tensor).

        Returns:
            uint8 values (uint16 when a value is above 255), or uint8 RGB for a palette.

        Shape:
            classes: (H, W) → (H, W), or (H, W, 3) for a palette encoding.
        """
        labels = np.asarray(classes)
        if labels.dtype.kind not in "iu":
            raise TypeError(
                message("classes to encode", "be integers", labels.dtype, "convert with .astype")
            )
        k = self.num_classes
        rows = np.where((labels >= 0) & (labels < k), labels, -1).astype(np.int64)
        rows[labels == self.ignore_index] = k
        if (rows < 0).any():
            raise ValueError(
                message(
                    "classes to encode",
                    f"be in [0, {k}) or ignore_index {self.ignore_index}",
                    f"values {format_values(np.unique(labels[rows < 0]).tolist())}",
                )
            )
        table, known = self._inverse
        missing = np.unique(rows[~known[rows]]).tolist()
        if missing:
            names = [f"ignore_index {self.ignore_index}" if r == k else str(r) for r in missing]
            raise ValueError(
                message(
                    f"the encoding {self.to_toml()}",
                    "have a mask value for every class it writes",
                    f"none for {format_values(names)}",
                    "add one to the value map (or the palette), or write class indices "
                    "(pixelwise predict --mask-format index)",
                )
            )
        return table[rows]

    def _bad_values_message(self, bad: np.ndarray, present: np.ndarray, source: str) -> str:
        declared = [r for r, _ in self.value_map]
        if self.kind == "values":
            expectation = f"hold only the declared values {format_values(declared)}"
        else:
            expectation = f"hold classes 0..{self.num_classes - 1}" + (
                f" or the ignored values {declared}" if declared else ""
            )
        return message(
            f"mask {source}", expectation, f"values {format_values(bad)}", self._fix(bad, present)
        )

    def _fix(self, bad: np.ndarray, present: np.ndarray) -> str:
        """What to declare for undeclared mask values, as an encoding in its one spelling."""
        if set(present.tolist()) <= {0, 255}:
            binary = MaskEncoding.values({0: 0, 255: 1}, ignore_index=self.ignore_index)
            return f"the mask looks binary: declare encoding = {binary.to_toml()}"
        if len(bad) > _MAX_SHOWN:  # too many to write out: say where they go
            if self.kind == "values":
                return "add the values to the value map (map a value to ignore_index to ignore it)"
            return 'list them in ignore_values, or declare a value map (kind = "values")'
        values = [int(v) for v in bad]
        if self.kind == "values":
            table = {**dict(self.value_map), **dict.fromkeys(values, self.ignore_index)}
            ignoring = dataclasses.replace(self, value_map=tuple(sorted(table.items())))
            return f"add them to the value map, e.g. encoding = {ignoring.to_toml()} to ignore them"
        ignoring = MaskEncoding.index(
            self.num_classes,
            ignore_values=[r for r, _ in self.value_map] + values,
            ignore_index=self.ignore_index,
        )
        return (
            f"declare encoding = {ignoring.to_toml()} to ignore them, "
            'or a value map (kind = "values") to read them as classes'
        )

    def _decode_colors(self, raw: np.ndarray, source: str) -> np.ndarray:
        if raw.ndim != 3 or raw.shape[-1] != 3:
            raise ValueError(
                message(f"mask {source}", "be RGB (H, W, 3) for a palette encoding", raw.shape)
            )
        codes = _pack(raw.astype(np.int64))
        keys = _pack(np.asarray(self.colors, dtype=np.int64).reshape(-1, 3))
        order = np.argsort(keys)
        pos = np.searchsorted(keys[order], codes).clip(0, len(keys) - 1)
        found = keys[order][pos] == codes
        if not found.all():
            colors = [tuple(int(c) for c in _unpack(v)) for v in np.unique(codes[~found])]
            raise ValueError(
                message(
                    f"mask {source}",
                    f"use only the {len(keys)} palette colours",
                    f"other colours {format_values(colors, 5)}",
                    "add them to the palette (positions >= num_classes are ignored)",
                )
            )
        classes = order[pos]
        return np.where(classes < self.num_classes, classes, self.ignore_index).astype(np.int64)


# The encoding that messages show as an example: binary 0/255 masks.
EXAMPLE = MaskEncoding.values({0: 0, 255: 1})


def _pack(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _unpack(code: int) -> RGB:
    return (code >> 16) & 255, (code >> 8) & 255, code & 255


def _rgb_list(colors: Sequence[Sequence[int]]) -> tuple[RGB, ...]:
    out = []
    for c in colors:
        triple = tuple(int(v) for v in c)
        if len(triple) != 3 or not all(0 <= v <= 255 for v in triple):
            raise ValueError(message("palette colour", "be an RGB triple in 0..255", list(c)))
        out.append(triple)
    if not out:
        raise ValueError(message("palette", "have at least one colour", "none"))
    return tuple(out)


def read_palette(path: str | Path) -> tuple[RGB, ...]:
    """Read palette colours from an image, one pixel per colour in row order.

    A trailing run of one repeated colour is padding (palette files are often 256 wide) and is
    dropped after its first occurrence.
    """
    image = open_pil(Path(path), "palette image")
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).tolist()
    colors: list[RGB] = []
    for p in pixels:
        if tuple(p) in colors:
            if any(tuple(q) != tuple(p) for q in pixels[len(colors) :]):
                raise ValueError(
                    message(f"palette image {path}", "hold distinct colours", f"{p} repeated")
                )
            break
        colors.append(tuple(p))
    return tuple(colors)


def _integer(what: str, value: object, *, text: bool = False) -> int:
    """``value`` if it is an integer (``text``: or a string of one, as TOML's table keys are);
    a float is refused, not truncated (1.5 would silently become class 1)."""
    if text and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(message(what, "be an integer", repr(value)))
    return value


def read_class_names(path: str | Path, num_classes: int) -> tuple[str, ...]:
    """Read the first ``num_classes`` names from a classes.txt (``"0 Sky"`` or ``"Sky"`` lines).

    Extra lines (e.g. CamVid's ``11 Unlabelled`` when void is ignored) are not classes.
    """
    try:
        lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as err:
        raise ValueError(
            message(f"class file {path}", "be UTF-8 text", f"byte {err.start}: {err.reason}")
        ) from None
    names = []
    for number, line in enumerate(ln for ln in lines if ln and not ln.startswith("#")):
        first, _, rest = line.partition(" ")
        if first.isdigit() and rest.strip():
            if int(first) != number:
                raise ValueError(
                    message(f"class file {path}", f"number line {number} as {number}", first)
                )
            line = rest.strip()
        names.append(line)
    if len(names) < num_classes:
        raise ValueError(
            message(
                f"class file {path}",
                f"name all {num_classes} classes",
                f"{len(names)} names",
                "add the missing names or fix num_classes",
            )
        )
    return check_class_names(tuple(names[:num_classes]), f"class names in {path}")
