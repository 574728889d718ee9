"""A report as reports/index.html (self-contained: figures inlined) and reports/summary.md.

The HTML tags each number's cell with its source and key path (data-source, data-path), which
the tests check against metrics/*.json; a cell holding a difference and its interval tags each of its
three numbers (a <span> each).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from medr1.report.content import Cell, Interval, Report, Sourced, Table, signed

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;\
color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} h2{margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.5rem 0} th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left} .note{color:#555;font-size:.9rem}
img{max-width:100%;border:1px solid #eee}
"""

# Marks the page once every image has loaded, so a headless browser (and its test) can tell.
IMAGES_LOADED = """
window.addEventListener('load', () => {
  const images = [...document.images];
  const loaded = images.filter(image => image.complete && image.naturalWidth > 0).length;
  document.body.dataset.images = `loaded ${loaded}/${images.length}`;
});
"""


def _sourced(cell: Sourced, text: str) -> str:
    return f'data-source="{html.escape(cell.source)}" data-path="{html.escape(json.dumps(list(cell.path)))}">' \
           f"{html.escape(text)}"


def _cell_html(cell: Cell) -> str:
    if isinstance(cell, Sourced):
        return f"<td {_sourced(cell, cell.text())}</td>"
    if isinstance(cell, Interval):  # each of the three numbers tagged with its own source
        value, low, high = (f"<span {_sourced(part, signed(part))}</span>" for part in cell.parts())
        return f"<td class='interval'>{value} [{low}, {high}]</td>"
    return f"<td>{html.escape(cell)}</td>"


def render_html(report: Report) -> str:
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(report.title)}</title>",
             f"<style>{STYLE}</style><script>{IMAGES_LOADED}</script></head><body data-images='pending'>",
             f"<h1>{html.escape(report.title)}</h1>"]
    parts += [f"<p class='note'>{html.escape(fact)}</p>" for fact in report.facts]
    for section in report.sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if isinstance(section, Table):
            parts.append("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in section.header)
                         + "</tr></thead><tbody>")
            parts += ["<tr>" + "".join(_cell_html(cell) for cell in row) + "</tr>" for row in section.rows]
            parts.append("</tbody></table>")
        else:
            data = base64.b64encode(section.path.read_bytes()).decode()
            parts.append(f"<img alt='{html.escape(section.title)}' src='data:image/png;base64,{data}'>")
        if section.note:
            parts.append(f"<p class='note'>{html.escape(section.note)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_markdown(report: Report, relative_to: Path) -> str:
    lines = [f"# {report.title}", "", *[f"{fact}  " for fact in report.facts]]
    for section in report.sections:
        lines += ["", f"## {section.title}", ""]
        if isinstance(section, Table):
            lines.append("| " + " | ".join(section.header) + " |")
            lines.append("|" + "---|" * len(section.header))
            lines += ["| " + " | ".join(c if isinstance(c, str) else c.text() for c in row) + " |"
                      for row in section.rows]
        else:
            lines.append(f"![{section.title}]({section.path.relative_to(relative_to).as_posix()})")
        if section.note:
            lines += ["", section.note]
    return "\n".join(lines) + "\n"


def write_report(report: Report, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.html").write_text(render_html(report), encoding="utf-8")
    (out / "summary.md").write_text(render_markdown(report, out), encoding="utf-8")
