"""A plan as text: the run config TOML with a reason beside each choice, and a short table."""

from __future__ import annotations

import os
from pathlib import Path

from pixelwise._toml import _toml_key, toml_value
from pixelwise.plan.fingerprint import Fingerprint
from pixelwise.plan.planner import Plan, tile_for


def _relative(root: str, folder: Path | None) -> str:
    """``root`` relative to the folder the TOML will live in (how run files name paths)."""
    if folder is None:
        return root
    try:
        relative = os.path.relpath(os.path.abspath(root), os.path.abspath(folder))
    except ValueError:  # another drive
        return root
    return root if relative.startswith("..") else relative  # under the folder only


def summary_lines(fp: Fingerprint) -> list[str]:
    """What the fingerprint found, a line each."""
    height, width = fp.median_size
    lines = [
        f"data: {fp.root} ({fp.layout.layout}), {fp.num_images} images"
        + (f" + {fp.num_val} validation" if fp.num_val else "")
        + f", median {height}×{width}, {fp.channels} channel(s)",
        f"masks: {fp.proposal.reason}",
    ]
    if fp.class_fractions:
        shares = ", ".join(f"{share:.1%}" for share in fp.class_fractions[:12])
        lines.append(f"class shares: {shares}" + (" ..." if len(fp.class_fractions) > 12 else ""))
    if fp.objects_per_image:
        lines.append(
            f"objects: {fp.objects_per_image:g} per image (median), {fp.object_area:g} pixels "
            f"each (median), {fp.touching:.0%} touch another"
        )
    lines.append("scenes: " + ("have an up direction" if fp.upright else "no up direction"))
    return lines


def table_lines(plan: Plan) -> list[str]:
    """The candidates measured: seconds per iteration, iterations in the budget, the choice."""
    width = max(len(row[0]) for row in plan.rows)
    lines = [f"{'candidate'.ljust(width)}  s/iteration  iterations in budget"]
    for label, step, iterations, chosen in plan.rows:
        mark = "  <- chosen" if chosen else ""
        lines.append(f"{label.ljust(width)}  {step:11.3f}  {iterations:20,}{mark}")
    return lines


def plan_toml(plan: Plan, fp: Fingerprint, minutes: float, *, folder: Path | None = None) -> str:
    """The plan as a run config: each key with its reason as a comment; ``data.root``
    relative to ``folder`` (where the file goes; None keeps it as it is)."""
    head = [
        f"# Planned by pixelwise plan for {minutes:g} minutes on this machine.",
        *(f"#   {line}" for line in summary_lines(fp)),
        "#",
        *(f"#   {line}" for line in table_lines(plan)),
        "#",
        f"# Predict with: pixelwise predict RUN/best.pt IMAGES --out DIR --tile {tile_for(fp)}",
        *(f"# warning: {line}" for line in plan.warnings),
    ]
    blocks = ["\n".join(head)]
    for section, values in plan.tables.items():
        lines = [f"[{section}]"]
        for key, value in values.items():
            if value is None:
                continue
            if section == "data" and key == "root":
                value = _relative(str(value), folder)
            line = f"{_toml_key(key)} = {toml_value(value)}"
            reason = plan.reasons.get(f"{section}.{key}")
            lines.append(f"{line}  # {reason}" if reason else line)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
