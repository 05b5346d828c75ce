"""``pixelwise check-data``, and the ``--layout`` / ``--encoding`` flags that evaluate shares.

The data rules themselves (a folder's ``[data]`` table, the evaluation split) live in
:mod:`pixelwise.data.build`; they are imported inside the functions that run a command, so
that building the parser does not import torch.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from pixelwise.cli._format import message


class _Layouts:
    """The layouts of data on disk (:data:`pixelwise.data.build.FOLDER_LAYOUTS`), read when
    argparse first checks or shows a ``--layout`` (the data package imports torch)."""

    @staticmethod
    def _names() -> tuple[str, ...]:
        from pixelwise.data.build import FOLDER_LAYOUTS

        return FOLDER_LAYOUTS

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, value: object) -> bool:
        return value in self._names()


def parse_encoding(text: str | None) -> dict | None:
    """``--encoding``: a TOML inline table or JSON, checked by :meth:`MaskEncoding.from_config`;
    None if absent."""
    # At call time: start-up without torch.
    from pixelwise.config import parse_table
    from pixelwise.data import MaskEncoding
    from pixelwise.data.build import ENCODING_EXAMPLE

    if text is None:
        return None
    table = parse_table(text, "--encoding")
    if table is None:
        raise ValueError(
            message(
                "--encoding",
                "be a table (a TOML inline table or JSON)",
                repr(text),
                ENCODING_EXAMPLE,
            )
        )
    MaskEncoding.from_config(table)  # refuses a bad table before any file is read
    return table


def data_flags(args: argparse.Namespace) -> dict[str, object]:
    """``--layout`` and ``--encoding`` as keywords of :func:`pixelwise.data.build.folder_table`."""
    return {"layout": args.layout, "encoding": parse_encoding(args.encoding)}


def add_data_flags(p: argparse.ArgumentParser) -> None:
    """Add ``--layout`` and ``--encoding``."""
    p.add_argument(
        "--layout",
        choices=_Layouts(),
        metavar="LAYOUT",  # a metavar keeps argparse from listing the choices at start-up
        help="how the data is stored: %(choices)s (default: the checkpoint's or config's; "
        "folders otherwise)",
    )
    p.add_argument(
        "--encoding",
        metavar="TABLE",
        # The one spelling of an encoding (MaskEncoding.to_toml; a test keeps them the same).
        help="the mask encoding, a TOML inline table (or JSON), e.g. "
        '\'{ kind = "values", value_map = { "0" = 0, "255" = 1 } }\' '
        "(default: the checkpoint's or config's)",
    )


def _data_to_check(args: argparse.Namespace) -> tuple[dict, tuple[str, ...]]:
    """The ``[data]`` table of CONFIG.toml or DATA, and the splits to check."""
    # At call time: start-up without torch.
    from pixelwise.config import load_config
    from pixelwise.data.build import folder_table, override_data

    source = Path(args.source)
    if source.is_file():
        table = override_data(load_config(source).to_dict()["data"], **data_flags(args))
        return table, ("train", "val")
    if not source.is_dir():
        raise FileNotFoundError(
            message(f"{source}", "be a run config (.toml) or a data folder", "a missing path")
        )
    flags = data_flags(args)
    if flags["layout"] is None or flags["encoding"] is None:
        flags = _found_flags(source, flags)
    table = folder_table({}, str(source), **flags)
    return table, ("train", "val") if table["layout"] == "camvid" else ("all",)


def _found_flags(source: Path, flags: dict) -> dict:
    """The layout the folder's shape shows, and for folders or tiff without a declared
    encoding the one its mask values imply (printed with the values), else one line with the
    values found."""
    from pixelwise.plan.fingerprint import Layout, detect_layout, found_values

    found = detect_layout(source) if flags["layout"] is None else Layout(flags["layout"], "", "")
    if found.layout == "tiff" and not found.images:
        found = detect_layout(source)
    flags = {**flags, "layout": found.layout}
    if flags["encoding"] is None and found.layout in ("folders", "tiff"):
        values, proposal = found_values(source, found)
        if proposal.encoding is None:
            raise ValueError(
                message(f"the mask encoding of {source}", "be declared", proposal.reason)
            )
        print(f"masks hold {values}: {proposal.reason}")
        print(
            f"proposed: --encoding '{proposal.encoding.to_toml()}' (check it, then declare "
            "it in a run config or pass it)"
        )
        flags["encoding"] = proposal.encoding.to_config()
    return flags


def _sizes(sizes: Sequence[tuple[int, int]]) -> str:
    shown = [f"{h}×{w}" for h, w in sizes]
    if len(shown) <= 3:
        return "size " + ", ".join(shown) + " (H×W)"
    return f"{len(shown)} sizes from {shown[0]} to {shown[-1]} (H×W)"


def _print_data_summary(source: str, layout: str, summaries: Mapping[str, object]) -> None:
    counts = ", ".join(f"{split} {s.num_samples} samples" for split, s in summaries.items())
    print(f"checked {source} (layout {layout}): {counts}; no problems found")
    channels = sorted({s.channels for s in summaries.values()})
    sizes = sorted({size for s in summaries.values() for size in s.sizes})
    print(f"images: {'/'.join(map(str, channels))} channel(s), {_sizes(sizes)}")
    names = next(iter(summaries.values())).class_names
    width = max(len("ignored"), *map(len, names))
    print(
        "class".ljust(width)
        + "".join(f"  {split + ' pixels':>16}  {'%':>7}" for split in summaries)
    )
    for i, name in enumerate(names):
        cells = "".join(
            f"  {s.class_pixels[i]:>16,}  {100 * s.class_fractions[i]:>6.2f}%"
            for s in summaries.values()
        )
        print(name.ljust(width) + cells)
    ignored = "".join(f"  {s.ignored_pixels:>16,}  {'':>7}" for s in summaries.values())
    print(("ignored".ljust(width) + ignored).rstrip())
    for split, s in summaries.items():
        if s.absent_classes:
            print(f"classes without any pixel in {split}: {', '.join(s.absent_classes)}")


def cmd_check_data(args: argparse.Namespace) -> int:
    # At call time: start-up without torch.
    from tqdm import tqdm

    from pixelwise.data import check_splits
    from pixelwise.data.build import evaluation_dataset

    table, splits = _data_to_check(args)
    bars: dict[str, object] = {}

    def show(split: str, done: int, total: int) -> None:
        if split not in bars:
            bars[split] = tqdm(total=total, desc=f"check {split}", unit="sample", disable=None)
        bars[split].update(done - bars[split].n)

    try:  # every split checked, every problem reported together
        summaries = check_splits({s: evaluation_dataset(table, s) for s in splits}, show)
    finally:
        for bar in bars.values():
            bar.close()
    _print_data_summary(args.source, table["layout"], summaries)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``check-data``."""
    p = sub.add_parser(
        "check-data",
        help="read a whole data set and report class frequencies, sizes and every problem",
    )
    p.add_argument("source", metavar="CONFIG.toml|DATA", help="a run config or a data folder")
    add_data_flags(p)
    p.set_defaults(func=cmd_check_data)
