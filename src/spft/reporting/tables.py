"""Report tables: one :class:`Table` object rendered as Markdown, CSV, LaTeX (booktabs) and HTML.

Cells are plain values (str, float, None) or typed numbers — :class:`MeanStd`, :class:`Interval` and
:class:`Flagged` — so each format writes them its own way: ``0.8314 ± 0.0015`` in Markdown/HTML,
``$0.8314 \\pm 0.0015$`` in LaTeX, and separate full-precision columns (``<col> mean``, ``<col> std``, ``<col> n``)
in CSV for machines. A cell's ``flag`` (``below chance``: an AUC under 0.5) follows its value in Markdown, LaTeX
and HTML (where the cell is also marked red); CSV keeps the bare number, and the tables that flag add a column
saying which values are flagged.

Every user string (class, overlay and path names, overrides) is escaped for the format it goes into: HTML with
:func:`html.escape`; Markdown with :func:`md_escape` (``|``, ``\\``, backticks, ``*``, ``<``, ``>``, ``&``; line
breaks become spaces); LaTeX with :func:`latex_escape`; CSV with :func:`csv_safe` — :func:`spft.csvsafe.escape_cell`,
the rule every CSV spft writes follows (OWASP CSV injection): a text cell starting with ``=``, ``+``, ``-``, ``@``,
a tab or a carriage return gets a leading ``'`` so a spreadsheet shows it as text instead of evaluating it. Numbers
are written as numbers (a negative difference stays ``-0.0123``, never ``'-0.0123``).
"""

from __future__ import annotations

import csv
import html
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spft.atomic import atomic_write_text
from spft.csvsafe import escape_cell as csv_safe  # the one CSV cell rule (also used by atomic_write_csv)


@dataclass(frozen=True)
class MeanStd:
    """Mean and sample standard deviation (ddof=1) of ``n`` values; ``signed`` prints a leading + (differences)."""

    mean: float | None
    std: float | None
    n: int
    signed: bool = False
    flag: str = ""


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval; ``n_pos`` positives (and ``n_pos_units`` positive patients
    or lesions, ``unit_noun``) it rests on, shown after the interval."""

    point: float | None
    lo: float | None
    hi: float | None
    n_pos: int | None = None
    n_pos_units: int | None = None
    unit_noun: str = ""
    flag: str = ""


@dataclass(frozen=True)
class Flagged:
    """A plain number with a flag (``below chance``) shown beside it; CSV writes the number alone."""

    value: float | None
    flag: str = ""


BELOW_CHANCE = "below chance"


def chance_flag(value: float | None) -> str:
    """``"below chance"`` for an AUC under 0.5, else ``""``."""
    return BELOW_CHANCE if value is not None and not _isnan(value) and value < 0.5 else ""


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


def _positives(cell: Interval) -> str:
    if cell.n_pos is None:
        return ""
    units = f", {cell.n_pos_units} {cell.unit_noun}".rstrip() if cell.n_pos_units is not None else ""
    return f" (n+={cell.n_pos}{units})"


def format_cell(cell, digits: int = 4, latex: bool = False) -> str:
    """A cell as text; ``latex`` writes ± and intervals in math mode and escapes everything else."""
    flag = getattr(cell, "flag", "")
    text = _format_cell(cell, digits, latex)
    if flag:
        text += f" ({latex_escape(flag) if latex else flag})"
    return text


def _format_cell(cell, digits: int, latex: bool) -> str:
    if isinstance(cell, Flagged):
        cell = cell.value
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
        ci = f"[{_num(cell.lo, digits)}, {_num(cell.hi, digits)}]{_positives(cell)}"
        return f"{_num(cell.point, digits)} {ci}" if not latex else f"{_num(cell.point, digits)} {latex_escape(ci)}"
    if cell is None or _isnan(cell):
        return "--" if latex else "n/a"
    if isinstance(cell, float):
        return _num(cell, digits)
    return latex_escape(str(cell)) if latex else str(cell)


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "→": r"$\rightarrow$",
          "Δ": r"$\Delta$", "✓": r"\checkmark{}", "×": r"$\times$",
          "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)


_MD = {"\\": "\\\\", "|": "\\|", "`": "\\`", "*": "\\*", "<": "&lt;", ">": "&gt;",
       "&": "&amp;", "\n": " ", "\r": " "}


def md_escape(text: str) -> str:
    """``text`` safe inside a Markdown table cell or heading: no cell break, no markup, no raw HTML.

    >>> md_escape("<script>a|b</script>")
    '&lt;script&gt;a\\\\|b&lt;/script&gt;'
    """
    return "".join(_MD.get(ch, ch) for ch in str(text))


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
        cells = [[md_escape(format_cell(c, self.digits)) for c in row] for row in self.rows]
        lines = [f"**{md_escape(self.title)}**", "", f"*{md_escape(self.caption)}*", "",
                 "| " + " | ".join(md_escape(c) for c in self.columns) + " |",
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
                pos = [row[j] for row in self.rows if isinstance(row[j], Interval)]
                if any(c.n_pos is not None for c in pos):
                    layout.append((f"{col} n_pos", "n_pos"))
                if any(c.n_pos_units is not None for c in pos):
                    layout.append((f"{col} n_pos_units", "n_pos_units"))
            else:
                layout.append((col, "plain"))
        return layout

    def to_csv(self) -> str:
        layout = self._csv_layout()
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\r\n")  # RFC 4180; a CR inside a cell is then quoted
        writer.writerow([csv_safe(h) for h, _ in layout])
        for row in self.rows:
            out, k = [], 0
            for cell in row:
                width = 1
                while k + width < len(layout) and layout[k + width][1] not in ("plain", "mean", "point"):
                    width += 1
                out += _csv_cells(cell, width)
                k += width
            writer.writerow([csv_safe(v) for v in out])
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

        def td(j: int, c) -> str:
            cls = " ".join(k for k, on in (("paper", j in paper), ("below", bool(getattr(c, "flag", "")))) if on)
            attr = f' class="{cls}"' if cls else ""
            return f"<td{attr}>{html_cell(format_cell(c, self.digits))}</td>"

        body = "".join("<tr>" + "".join(td(j, c) for j, c in enumerate(row)) + "</tr>\n" for row in self.rows)
        scroll = "scroll wide" if len(self.columns) > WIDE_COLUMNS else "scroll"
        return (f'<div class="table" id="{html.escape(self.name)}"><p class="caption"><b>{html.escape(self.title)}.'
                f"</b> {html.escape(self.caption)} <small>[tables/{html.escape(self.name)}.md|csv|tex]</small></p>\n"
                f'<div class="{scroll}"><table><thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table></div>'
                "</div>\n")

    def write(self, out_dir: str | Path) -> list[Path]:
        """Write ``<name>.md``, ``<name>.csv`` and ``<name>.tex`` into ``out_dir``; return the paths."""
        out_dir = Path(out_dir)
        paths = []
        for ext, text in (("md", self.to_markdown()), ("csv", self.to_csv()), ("tex", self.to_latex())):
            path = out_dir / f"{self.name}.{ext}"
            atomic_write_text(path, text)
            paths.append(path)
        return paths


WIDE_COLUMNS = 6  # an HTML table with more columns gets the smaller font of ``div.scroll.wide``


def html_cell(text: str) -> str:
    """A table cell's text for HTML, escaped, that may wrap only between its parts: the value, the ``[interval]``
    and the ``(n+=...)`` note each stay on one line (``<span class="u">``); a cell without a space is left bare."""
    if " " not in text:
        return html.escape(text)
    parts = re.split(r" (?=[\[(])", text)
    return " ".join(f'<span class="u">{html.escape(p)}</span>' for p in parts)


def _csv_value(v) -> str | float | int:
    if v is None or _isnan(v):
        return ""
    return float(v) if isinstance(v, (float, np.floating)) else v


def _csv_cells(cell, width: int) -> list:
    if isinstance(cell, MeanStd):
        values = [_csv_value(cell.mean), _csv_value(cell.std), cell.n]
    elif isinstance(cell, Interval):
        values = [_csv_value(cell.point), _csv_value(cell.lo), _csv_value(cell.hi), _csv_value(cell.n_pos),
                  _csv_value(cell.n_pos_units)]
    elif isinstance(cell, Flagged):
        values = [_csv_value(cell.value)]
    else:
        values = [_csv_value(cell)]
    return (values + [""] * width)[:width]
