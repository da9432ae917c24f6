"""Report tables: one :class:`Table` object rendered as Markdown, CSV, LaTeX (booktabs) and HTML.

Cells are plain values (str, float, None) or typed numbers — :class:`MeanStd` and :class:`Interval` — so each
format writes them its own way: ``0.8314 ± 0.0015`` in Markdown/HTML, ``$0.8314 \\pm 0.0015$`` in LaTeX, and
separate full-precision columns (``<col> mean``, ``<col> std``, ``<col> n``) in CSV for machines.
"""

from __future__ import annotations

import csv
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spft.experiments.rundir import atomic_write_text


@dataclass(frozen=True)
class MeanStd:
    """Mean and sample standard deviation (ddof=1) of ``n`` values; ``signed`` prints a leading + (differences)."""

    mean: float | None
    std: float | None
    n: int
    signed: bool = False


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval."""

    point: float | None
    lo: float | None
    hi: float | None


def mean_std(values, signed: bool = False) -> MeanStd:
    """:class:`MeanStd` of the non-None values: ``np.mean`` and ``np.std(ddof=1)`` (std None below 2 values).

    >>> format_cell(mean_std([0.8331, 0.8302, 0.8309]))  # the paper's ChestX-ray14 runs
    '0.8314 ± 0.0015'
    """
    vals = np.array([v for v in values if v is not None and not _isnan(v)], dtype=np.float64)
    if vals.size == 0:
        return MeanStd(None, None, 0, signed)
    std = float(np.std(vals, ddof=1)) if vals.size > 1 else None
    return MeanStd(float(np.mean(vals)), std, int(vals.size), signed)


def _isnan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _num(v: float | None, digits: int, signed: bool = False) -> str:
    if v is None or _isnan(v):
        return "n/a"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def format_cell(cell, digits: int = 4, latex: bool = False) -> str:
    """A cell as text; ``latex`` writes ± and intervals in math mode and escapes everything else."""
    if isinstance(cell, MeanStd):
        if cell.mean is None:
            return "--" if latex else "n/a"
        mean = _num(cell.mean, digits, cell.signed)
        if cell.std is None:
            return f"{mean} (n={cell.n})"
        return f"${mean} \\pm {_num(cell.std, digits)}$" if latex else f"{mean} ± {_num(cell.std, digits)}"
    if isinstance(cell, Interval):
        if cell.point is None:
            return "--" if latex else "n/a"
        ci = f"[{_num(cell.lo, digits)}, {_num(cell.hi, digits)}]"
        return f"{_num(cell.point, digits)} {ci}" if not latex else f"{_num(cell.point, digits)} {latex_escape(ci)}"
    if cell is None or _isnan(cell):
        return "--" if latex else "n/a"
    if isinstance(cell, float):
        return _num(cell, digits)
    return latex_escape(str(cell)) if latex else str(cell)


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "→": r"$\rightarrow$",
          "Δ": r"$\Delta$", "✓": r"\checkmark{}", "×": r"$\times$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)


@dataclass
class Table:
    """A titled, captioned table; ``name`` is the file stem, ``paper_columns`` the columns holding published values."""

    name: str
    title: str
    caption: str
    columns: list[str]
    rows: list[list] = field(default_factory=list)
    digits: int = 4
    paper_columns: tuple[str, ...] = ()

    def to_markdown(self) -> str:
        cells = [[format_cell(c, self.digits).replace("|", "\\|") for c in row] for row in self.rows]
        lines = [f"**{self.title}**", "", f"*{self.caption}*", "",
                 "| " + " | ".join(c.replace("|", "\\|") for c in self.columns) + " |",
                 "|" + "|".join(["---"] + ["---:"] * (len(self.columns) - 1)) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines) + "\n"

    def _csv_layout(self) -> list[tuple[str, str]]:
        """Column expansion: (header, kind) with kind plain | mean | std | n | point | lo | hi."""
        layout = []
        for j, col in enumerate(self.columns):
            kinds = {type(row[j]) for row in self.rows}
            if MeanStd in kinds:
                layout += [(f"{col} mean", "mean"), (f"{col} std", "std"), (f"{col} n", "n")]
            elif Interval in kinds:
                layout += [(col, "point"), (f"{col} lo", "lo"), (f"{col} hi", "hi")]
            else:
                layout.append((col, "plain"))
        return layout

    def to_csv(self) -> str:
        layout = self._csv_layout()
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([h for h, _ in layout])
        for row in self.rows:
            out, k = [], 0
            for cell in row:
                width = 3 if layout[k][1] != "plain" else 1
                out += _csv_cells(cell, width)
                k += width
            writer.writerow(out)
        return buf.getvalue()

    def to_latex(self) -> str:
        spec = "l" + "r" * (len(self.columns) - 1)
        head = " & ".join(latex_escape(c) for c in self.columns) + r" \\"
        body = [" & ".join(format_cell(c, self.digits, latex=True) for c in row) + r" \\" for row in self.rows]
        caption = f"{latex_escape(self.title)}. {latex_escape(self.caption)}"
        lines = [r"% needs \usepackage{booktabs} (and amssymb for \checkmark)", r"\begin{table}[t]", r"\centering",
                 r"\small", rf"\caption{{{caption}}}", rf"\label{{tab:{self.name.replace('_', '-')}}}",
                 rf"\begin{{tabular}}{{{spec}}}", r"\toprule", head, r"\midrule", *body, r"\bottomrule",
                 r"\end{tabular}", r"\end{table}"]
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        paper = {j for j, c in enumerate(self.columns) if c in self.paper_columns}
        head = "".join(f'<th{" class=paper" if j in paper else ""}>{html.escape(c)}</th>'
                       for j, c in enumerate(self.columns))
        body = "".join("<tr>" + "".join(f'<td{" class=paper" if j in paper else ""}>'
                                        f"{html.escape(format_cell(c, self.digits))}</td>"
                                        for j, c in enumerate(row)) + "</tr>\n" for row in self.rows)
        return (f'<div class="table" id="{html.escape(self.name)}"><p class="caption"><b>{html.escape(self.title)}.'
                f"</b> {html.escape(self.caption)} <small>[tables/{html.escape(self.name)}.md|csv|tex]</small></p>\n"
                f"<table><thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table></div>\n")

    def write(self, out_dir: str | Path) -> list[Path]:
        """Write ``<name>.md``, ``<name>.csv`` and ``<name>.tex`` into ``out_dir``; return the paths."""
        out_dir = Path(out_dir)
        paths = []
        for ext, text in (("md", self.to_markdown()), ("csv", self.to_csv()), ("tex", self.to_latex())):
            path = out_dir / f"{self.name}.{ext}"
            atomic_write_text(path, text)
            paths.append(path)
        return paths


def _csv_value(v) -> str | float | int:
    if v is None or _isnan(v):
        return ""
    return repr(float(v)) if isinstance(v, float) else v


def _csv_cells(cell, width: int) -> list:
    if isinstance(cell, MeanStd):
        values = [_csv_value(cell.mean), _csv_value(cell.std), cell.n]
    elif isinstance(cell, Interval):
        values = [_csv_value(cell.point), _csv_value(cell.lo), _csv_value(cell.hi)]
    else:
        values = [_csv_value(cell)]
    return (values + [""] * width)[:width]
