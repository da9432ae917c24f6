"""The self-contained ``report.html``: inline CSS, figures embedded as base64 PNG, no scripts, fonts or URLs.

It opens offline and can be mailed as one file. Content comes from :mod:`spft.reporting.report` (and the
detection and segmentation reports): a summary with the config and the exact overrides, the runs used and skipped,
every table (paper columns highlighted, values below chance in red) and every figure with its caption. Every
string that comes from the runs (class, overlay and path names, overrides, commands) goes through
:func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

from spft.reporting.tables import Table

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; margin-top: 2em; }
div.scroll { max-width: 100%; overflow-x: auto; margin: 1em 0 1.5em; }
table { border-collapse: collapse; font-size: 0.86em; }
div.scroll.wide table { font-size: 0.78em; }
div.scroll.wide th, div.scroll.wide td { padding: 2px 6px; }
.caption { font-size: 0.9em; margin: 1.4em 0 0.3em; max-width: 1000px; } .caption small { color: #888; }
div.table div.scroll { margin-top: 0.2em; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 3px 9px; text-align: right; white-space: normal;
         vertical-align: top; }
thead th { vertical-align: bottom; }
span.u { white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { border-bottom: 2px solid #999; background: #fafafa; }
.paper { background: #fff6e0; font-style: italic; }
.note { background: #f4f7fb; border-left: 4px solid #4C72B0; padding: 0.6em 1em; }
.meta td { text-align: left; overflow-wrap: anywhere; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #444; }
.skipped td { color: #a33; }
td.below { color: #b00; font-weight: 600; }
.overrides td { text-align: left; overflow-wrap: anywhere; font-family: ui-monospace, Menlo, Consolas, monospace; }
"""


@dataclass
class Figure:
    png: Path
    caption: str


def _img(png: Path) -> str:
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(png.stem)}" src="data:image/png;base64,{data}">'


def _kv_table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><td><b>{html.escape(k)}</b></td><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f'<div class="scroll"><table class="meta"><tbody>{body}</tbody></table></div>'


def _plain_table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def render_html(title: str, summary: list[tuple[str, str]], note: str, used: list[list[str]],
                skipped: list[list[str]], tables: list[Table], figures: list[Figure],
                details: list[Table] = (), used_header: list[str] | None = None,
                header_tables: list[Table] = ()) -> str:
    """The whole report as one HTML string.

    Args:
        title: page heading.
        summary: ``(key, value)`` lines (sweep, config, dataset, seeds, bootstrap settings...).
        note: where the numbers come from and what the "paper" columns are.
        used: rows of (overlay, seed, run dir, macro AUC, best epoch, test images, overrides), or of
            ``used_header``'s columns.
        skipped: rows of (overlay, seed, run dir, reason).
        tables: the summary tables (shown first), rendered with :meth:`Table.to_html`.
        figures: PNGs embedded as base64.
        details: per-run tables, shown after the figures.
        used_header: the columns of ``used`` (default the classification report's).
        header_tables: shown under the summary (the overrides of each row of the study).
    """
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>", _kv_table(summary),
             *(t.to_html().replace("<table>", '<table class="overrides">', 1) for t in header_tables),
             f'<p class="note">{html.escape(note)}</p>', "<h2>Results</h2>", *(t.to_html() for t in tables),
             "<h2>Figures</h2>"]
    for fig in figures:
        parts.append(f"<figure>{_img(fig.png)}<figcaption>{html.escape(fig.caption)}</figcaption></figure>")
    parts += [f"<h2>Runs used ({len(used)})</h2>",
              _plain_table(used_header or ["overlay", "seed", "run directory", "macro AUC", "best epoch",
                                           "test images", "overrides (exact)"], used, "overrides"),
              f"<h2>Runs skipped ({len(skipped)})</h2>",
              _plain_table(["overlay", "seed", "run directory", "reason"], skipped, "skipped") if skipped
              else "<p>None: every run of the sweep finished and is used.</p>"]
    if details:
        parts += ["<h2>Per run</h2>", *(t.to_html() for t in details)]
    parts.append("<p><small>Tables are also written as Markdown, CSV and LaTeX under <code>tables/</code>, figures as "
                 "PNG and SVG under <code>figures/</code>.</small></p></body></html>\n")
    return "\n".join(parts)
