"""Print a cohort summary as rich tables: steps, labels, modality availability (Figure 3)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["print_cohort_summary"]


def print_cohort_summary(summary: Mapping[str, Any], console: Console | None = None) -> None:
    """Render the summary saved by ``write_cohort`` on the terminal."""
    out = console or Console()
    steps = summary.get("steps") or []
    if steps:
        t = Table(title=f"Cohort construction ({summary.get('source', '')})")
        t.add_column("step")
        t.add_column("admissions", justify="right")
        t.add_column("removed", justify="right")
        for s in steps:
            t.add_row(str(s["name"]), str(s["count"]), str(s.get("removed", "")))
        out.print(t)
    labels = Table(title="Labels")
    for col in ("task", "positive", "negative", "unknown", "rate"):
        labels.add_column(col, justify="left" if col == "task" else "right")
    for key, c in summary.get("labels", {}).items():
        rate = "" if c["rate"] is None else f"{c['rate']:.3f}"
        labels.add_row(key, str(c["positive"]), str(c["negative"]), str(c["unknown"]), rate)
    out.print(labels)
    n = int(summary.get("admissions", 0))
    avail = Table(title="Modality availability per combination")
    avail.add_column("combination")
    avail.add_column("admissions", justify="right")
    avail.add_column("share", justify="right")
    for name, count in summary.get("availability_patterns", {}).items():
        avail.add_row(name, str(count), f"{count / n:.1%}" if n else "")
    out.print(avail)
    out.print(
        f"admissions {n}, patients {summary.get('patients', 0)}, splits "
        f"{summary.get('splits', {})}, quality notes {sum(summary.get('quality', {}).values())}"
    )
