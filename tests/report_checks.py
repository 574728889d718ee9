"""Checks of a rendered report, shared by the report tests and the end-to-end pipeline test."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

NUMBER = re.compile(r"^[+-]?\d+(\.\d+)?([eE][+-]?\d+)?$")
NUMBERS = re.compile(r"[+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class _Cells(HTMLParser):
    """Every <td> with its text and its data-source / data-path attributes, and the rows they form; a
    <span> with a data-source inside a <td> (one of an interval cell's three numbers) is a cell of its own
    in `cells`, and its <td> counts it in "parts"."""

    def __init__(self):
        super().__init__()
        self.cells: list[dict] = []
        self.rows: list[list[str]] = []
        self._open: dict | None = None
        self._span: dict | None = None
        self.images = 0

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        if tag == "td":
            self._open = {**dict(attrs), "text": "", "parts": 0}
        if tag == "span" and self._open is not None and "data-source" in dict(attrs):
            self._span = {**dict(attrs), "text": ""}
        if tag == "img":
            self.images += 1

    def handle_data(self, data):
        if self._open is not None:
            self._open["text"] += data
        if self._span is not None:
            self._span["text"] += data

    def handle_endtag(self, tag):
        if tag == "span" and self._span is not None:
            self.cells.append(self._span)
            self._open["parts"] += 1
            self._span = None
        if tag == "td" and self._open is not None:
            self.cells.append(self._open)
            self.rows[-1].append(self._open["text"].strip())
            self._open = None


def parse(html_text: str) -> _Cells:
    parser = _Cells()
    parser.feed(html_text)
    return parser


def lookup(metrics_dir: Path, source: str, path: list[str]):
    value = json.loads((metrics_dir / source).read_text())
    for key in path:
        value = value[int(key)] if isinstance(value, list) else value[key]
    return value


def check_numbers(report_dir: Path, metrics_dir: Path) -> int:
    """Assert every number in index.html's tables is sourced and equals its metric, and that
    summary.md's tables hold the HTML's rows cell for cell; returns how many numbers were checked."""
    page = parse((report_dir / "index.html").read_text())
    cells = page.cells
    checked = 0
    for cell in cells:
        text = cell["text"].strip()
        if "data-source" not in cell:
            assert not NUMBER.match(text), f"number {text!r} in the report has no source"
            # a cell of several numbers (a difference and its interval) sources each one, in a span of its own
            assert not cell["parts"] or len(NUMBERS.findall(text)) == cell["parts"], \
                f"cell {text!r} in the report holds numbers without a source"
            continue
        expected = lookup(metrics_dir, cell["data-source"], json.loads(cell["data-path"]))
        assert float(text) == expected, f"{cell['data-source']} {cell['data-path']}: report {text}, metrics {expected}"
        checked += 1
    markdown_rows, header = [], True
    for line in (report_dir / "summary.md").read_text().splitlines():
        if not line.startswith("|"):
            header = True  # the next table row is a header
        elif line.startswith("|---"):
            header = False
        elif not header:
            markdown_rows.append([part.strip() for part in line.strip().strip("|").split("|")])
    html_rows = [row for row in page.rows if row]  # header rows hold <th> only
    assert markdown_rows == html_rows, "summary.md's tables differ from index.html's"
    return checked


def shown(report_dir: Path) -> set[tuple]:
    """(source, *key path) of every sourced number in index.html, an interval's three included."""
    return {(cell["data-source"], *json.loads(cell["data-path"]))
            for cell in parse((report_dir / "index.html").read_text()).cells if cell.get("data-source")}


def interval_paths(*path: str) -> set[tuple]:
    """The key paths of a paired comparison's difference and interval (medr1/evaluate/paired.py)."""
    return {(*path, "difference"), (*path, "interval", "0"), (*path, "interval", "1")}


def check_intervals(report_dir: Path, metrics_dir: Path) -> int:
    """Assert the report shows, with its paired interval, every gain over the base (the headline, each
    modality and question type, each study cell) and GRPO against SFT in- and cross-domain in each study
    family that has such cells; check_numbers checks each against its metric. Returns how many."""
    on_page = shown(report_dir)
    evaluation = json.loads((metrics_dir / "eval.json").read_text())
    expected: set[tuple] = set()
    for prefix in ("", "sft_"):
        comparison = evaluation[f"{prefix}paired_gain_over_base"]
        expected |= interval_paths("eval.json", f"{prefix}paired_gain_over_base", "overall")
        for key in ("per_modality", "per_question_type"):
            for group in comparison[key]:
                expected |= interval_paths("eval.json", f"{prefix}paired_gain_over_base", key, group)
    expected |= interval_paths("eval.json", "paired_grpo_vs_sft", "overall")
    study = json.loads((metrics_dir / "generalization.json").read_text())
    for family in ("modality", "question_type"):
        if family not in study:
            continue
        groups = study[family]["groups"]
        for method in ("grpo", "sft"):
            expected |= {path for a in groups for b in groups for path in
                         interval_paths("generalization.json", family, method, "paired_gain_over_base", a, b)}
        kinds = ("in_domain", "cross_domain") if len(groups) > 1 else ("in_domain",)
        assert set(study[family]["grpo_vs_sft"]) == set(kinds), f"{family}: GRPO against SFT {kinds} expected"
        expected |= {path for kind in kinds
                     for path in interval_paths("generalization.json", family, "grpo_vs_sft", kind)}
    missing = expected - on_page
    assert not missing, f"the report lacks {len(missing)} gains or intervals, e.g. {sorted(missing)[:3]}"
    return len(expected)


def render_in_chromium(index: Path, workdir: Path) -> tuple[str, Path]:
    """(the DOM after load, a screenshot) of `index` in headless Chromium, offline."""
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
             f"--user-data-dir={workdir / 'profile'}", "--window-size=1280,2400", "--virtual-time-budget=5000"]
    url = index.resolve().as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout
    screenshot = workdir / "report.png"
    subprocess.run([*flags, f"--screenshot={screenshot}", url], capture_output=True, text=True, timeout=120, check=True)
    return dom, screenshot
