"""The ``pixelwise`` command: parses arguments, calls the library, prints.

One module per command family adds its own subcommands (``add_parser``):
:mod:`~pixelwise.cli.tools` (models, shapes, weightmap), :mod:`~pixelwise.cli.checkpoint`
(evaluate, predict, info, export), :mod:`~pixelwise.cli.data` (check-data),
:mod:`~pixelwise.cli.plan` (plan),
:mod:`~pixelwise.cli.train`, :mod:`~pixelwise.cli.stylize` and :mod:`~pixelwise.cli.serve`. The commands import torch and
the library when they run, so ``pixelwise --help`` and ``--version`` start without them.

Errors raised at the library's public boundary (ValueError, TypeError, FileNotFoundError)
are printed as one line, ``pixelwise: error: ...``, with exit status 2; ``--debug`` shows
the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence

from pixelwise import __version__
from pixelwise.cli import checkpoint, data, plan, serve, stylize, tools, train
from pixelwise.cli._format import count_parameters, parse_option
from pixelwise.cli.train import _TrainBars

USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError)
# In the order `pixelwise --help` lists them.
_COMMANDS = (tools, checkpoint, data, plan, train, stylize, serve)

__all__ = ["USER_ERRORS", "_TrainBars", "build_parser", "count_parameters", "main", "parse_option"]


def build_parser() -> argparse.ArgumentParser:
    """The ``pixelwise`` parser, every command module adding its subcommands."""
    parser = argparse.ArgumentParser(
        prog="pixelwise", description="Semantic segmentation, from patch classifiers to DeepLab."
    )
    parser.add_argument("--version", action="version", version=f"pixelwise {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks instead of one-line errors"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        if args.debug:
            raise
        print(f"pixelwise: error: {exc}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as exc:
        if args.debug or not _out_of_memory(exc):
            raise
        print(f"pixelwise: error: {_memory_message(args.command, exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (e.g. `pixelwise info ... | head`): stop quietly, as cat does.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - replaces the closed stream
        return 0


# What torch's allocators say when a tensor does not fit (CPU, CUDA, MPS).
_OUT_OF_MEMORY = ("can't allocate memory", "out of memory", "not enough memory")


def _out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or any(words in text for words in _OUT_OF_MEMORY)


def _memory_message(command: str, exc: BaseException) -> str:
    """One line for a command that ran out of memory (an image, tile, crop or batch too large
    for this machine), instead of an allocator's traceback."""
    from pixelwise.cli._format import message

    detail = (str(exc).splitlines() or [type(exc).__name__])[0]
    tried = re.search(r"tried to allocate [^.;(]+", detail)  # CPU and CUDA allocators say so
    return message(
        f"pixelwise {command}",
        "fit in memory",
        tried.group(0).strip() if tried else detail,
        "use a smaller size: --size, --tile, data.crop_size or train.batch_size",
    )
