"""The report page: one self-contained HTML file, readable without a network or a script.

Everything is inline (CSS, SVG, PNG data URIs) and a Content-Security-Policy forbids the page
any other source, so opening it can never fetch anything. Its text comes from the result record
and from measurements only: paths, sizes, counts, ratios, dB, the pipeline's own reasons. No
header value is written here; the images are the only thing drawn from the files' contents.
Every list is cut at ``rows`` entries (the record has them all), which keeps any study's page
to a few MB.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from pipeline.report.charts import FLOOR_COLOURS, quality_chart
from pipeline.report.panels import Panel, difference_caption
from pipeline.report.series import Series, floor_db

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body{font:14px/1.45 "DejaVu Sans","Liberation Sans",Arial,sans-serif;color:#111827;margin:0;background:#f3f4f6}
main{max-width:1100px;margin:0 auto;padding:20px 28px 40px;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #e5e7eb;padding-bottom:4px}
h3{font-size:15px;margin:22px 0 6px;font-family:"DejaVu Sans Mono",monospace;word-break:break-all}
.muted{color:#6b7280}.bad{color:#b91c1c;font-weight:600}.ok{color:#047857;font-weight:600}
table{border-collapse:collapse;margin:6px 0}td,th{padding:3px 10px 3px 0;text-align:left;vertical-align:top}
th{font-weight:600;color:#374151;border-bottom:1px solid #d1d5db}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.totals td:first-child{color:#4b5563;padding-right:18px}
.list td{border-bottom:1px solid #f0f1f3;font-size:13px}.path{font-family:"DejaVu Sans Mono",monospace;font-size:12px;word-break:break-all}
.pick{margin:10px 0 18px}.pick .cap{margin:2px 0 6px}.trio{display:flex;gap:10px;flex-wrap:wrap}
figure{margin:0;background:#000;color:#e5e7eb;padding:6px;border-radius:4px}figcaption{font-size:12px;padding-top:4px;max-width:256px}
figure img{display:block}img.px{image-rendering:pixelated}
.none{display:flex;align-items:center;justify-content:center;text-align:center;color:#9ca3af;font-size:12px}
svg.chart{display:block;max-width:100%;height:auto}svg .tick{font-size:11px;fill:#4b5563}svg .ratio{fill:#6b7280}svg .axis{font-size:11px;fill:#374151}
summary{cursor:pointer;color:#1d4ed8;margin:4px 0}.legend span{display:inline-block;margin-right:14px;font-size:12px}.dot{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:4px}
"""


def _num(value: Any, digits: int = 1) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "\u2013"
    return f"{value:,.{digits}f}"


def _int(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "\u2013"


def _bytes(value: Any) -> str:
    if not isinstance(value, int) or isinstance(value, bool):
        return "\u2013"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:,.1f} {unit}"
    return f"{value} B"


def _db(value: float | None) -> str:
    if value is None:
        return "\u2013"
    return "bit-exact" if math.isinf(value) else f"{value:.1f} dB"


def _rows(rows: Sequence[str], limit: int, columns: int, what: str) -> str:
    shown = "".join(rows[:limit])
    if len(rows) > limit:
        shown += f'<tr><td colspan="{columns}" class="muted">\u2026 and {len(rows) - limit:,} more {what} (all are in the result record)</td></tr>'
    return shown


def _header(record: Mapping[str, Any], floor: float | None) -> str:
    study = record.get("study") or {}
    name = study.get("name") or study.get("prefix") or ""
    settings = record.get("settings") or {}
    status = str(record.get("status", ""))
    status_class = "ok" if status == "succeeded" else "bad"
    mode = settings.get("mode")
    rate = f", rate {_num(settings.get('rate'), 0)}" if mode == "lossy" and settings.get("rate") is not None else ""
    floor_text = f", quality floor {_num(floor)} dB range-PSNR" if floor is not None else ", no quality floor"
    when = (
        f' <span class="muted">\u00b7 finished {escape(str(record["finishedAt"]))}</span>'
        if record.get("finishedAt")
        else ""
    )
    return (
        f"<h1>Compression quality report</h1>"
        f'<p><span class="path">{escape(str(name))}</span> \u00b7 <span class="{status_class}">{escape(status)}</span>{when}<br>'
        f"{escape(str(mode or ''))} {escape(str(settings.get('codec', '')))}{escape(rate)}{escape(floor_text)}"
        f"{'' if settings.get('verify', True) else ', not verified'}</p>"
    )


def _totals(record: Mapping[str, Any]) -> str:
    t, v = record.get("totals") or {}, record.get("verification") or {}
    rows = [
        (
            "files",
            f"{_int(t.get('files'))}: {_int(t.get('compressed'))} compressed, {_int(t.get('kept'))} kept as-is, "
            f"{_int(t.get('ignored'))} ignored; {_int(t.get('fileWarnings'))} with a warning",
        ),
        (
            "bytes",
            f"{_bytes(t.get('bytesIn'))} in \u2192 {_bytes(t.get('bytesOut'))} ZIP (ratio {_num(t.get('ratio'))}:1)",
        ),
        (
            "pixel data",
            f"{_bytes(t.get('pixelBytesIn'))} \u2192 {_bytes(t.get('pixelBytesOut'))} (ratio {_num(t.get('pixelRatio'))}:1)",
        ),
    ]
    if v.get("enabled", True):
        check = f"{_int(v.get('bitExact'))} bit-exact, {_int(v.get('lossy'))} lossy"
        if v.get("lossy"):
            check += f"; PSNR min {_num(v.get('minPsnrDb'))} dB, mean {_num(v.get('meanPsnrDb'))} dB; max error {_int(v.get('maxAbsError'))}"
        if v.get("minRangePsnrDb") is not None:
            check += f"; range-PSNR min {_num(v.get('minRangePsnrDb'))} dB"
        rows.append(("verified", check))
    else:
        rows.append(("verified", "no (verification was off)"))
    if "floorInterventions" in t:
        rows.append(
            (
                "quality floor",
                f"{_int(t.get('floorInterventions'))} image(s) changed to meet it (re-encoded or made lossless)",
            )
        )
    body = "".join(f"<tr><td>{escape(k)}</td><td>{escape(val)}</td></tr>" for k, val in rows)
    return f'<h2>Study totals</h2><table class="totals">{body}</table>'


def _series_table(series: Sequence[Series], detailed: set[str], floor: float | None, limit: int) -> str:
    if not series:
        return '<h2>Series</h2><p class="muted">No image was compressed.</p>'
    with_floor = floor is not None or any(im.floor for s in series for im in s.images)
    rows = []
    for i, s in enumerate(series):
        measured = s.measured
        ratios = [im.ratio for im in s.images if im.ratio is not None]
        worst = measured[0].measure if measured else None
        name = escape(s.folder)
        link = f'<a href="#s{i}">{name}</a>' if s.folder in detailed else name
        low = " bad" if floor is not None and worst is not None and worst < floor else ""
        ratio_text = f"{min(ratios):.1f}\u2013{max(ratios):.1f}" if ratios else "\u2013"
        cells = [
            f'<td class="path">{link}</td>',
            f'<td class="n">{len(s.images):,}</td>',
            f'<td class="n{low}">{_db(worst)}</td>',
            f'<td class="n">{_db(s.median.measure)}</td>',
            f'<td class="n">{ratio_text}</td>',
        ]
        if with_floor:
            count = sum(1 for im in s.images if (im.floor or {}).get("action") in FLOOR_COLOURS)
            cells.append(f'<td class="n">{count or ""}</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    head = [
        "<th>folder</th>",
        '<th class="n">images</th>',
        '<th class="n">worst</th>',
        '<th class="n">median</th>',
        '<th class="n">ratio (:1)</th>',
    ] + (['<th class="n">changed by the floor</th>'] if with_floor else [])
    note = (
        ""
        if len(detailed) >= len(series)
        else (
            f'<p class="muted">The {len(detailed)} series with the lowest quality are shown in detail below (linked).</p>'
        )
    )
    return f'<h2>Series</h2><table class="list"><tr>{"".join(head)}</tr>{_rows(rows, limit, len(head), "series")}</table>{note}'


#: The floor's decisions in words.
FLOOR_ACTIONS = {"met": "met", "reencoded": "re-encoded", "lossless": "made lossless", "off": "off"}
#: Tables longer than this start folded (an HTML <details>: no script needed to unfold them).
FOLD_ROWS = 15


def _table(head: str, rows: Sequence[str], limit: int, columns: int, what: str) -> str:
    table = f'<table class="list">{head}{_rows(rows, limit, columns, what)}</table>'
    if len(rows) <= FOLD_ROWS:
        return table
    return f"<details><summary>{len(rows):,} {escape(what)}</summary>{table}</details>"


def _floor(record: Mapping[str, Any], floor: float | None, limit: int) -> str:
    files = [f for f in record.get("files") or [] if isinstance(f.get("floor"), Mapping)]
    if floor is None and not files:
        return ""
    counts: dict[str, int] = {}
    for f in files:
        action = FLOOR_ACTIONS.get(str(f["floor"].get("action")), str(f["floor"].get("action")))
        counts[action] = counts.get(action, 0) + 1
    summary = (
        ", ".join(f"{n:,} {escape(action)}" for action, n in sorted(counts.items())) or "no image measured against it"
    )
    rows = [
        f'<tr><td class="path">{escape(str(f["path"]))}</td>'
        f"<td>{escape(FLOOR_ACTIONS.get(str(f['floor'].get('action')), str(f['floor'].get('action'))))}</td>"
        f"<td>{escape(str(f['floor'].get('detail') or ''))}</td></tr>"
        for f in files
        if f["floor"].get("action") not in ("met", "off")
    ]
    table = (
        _table("<tr><th>file</th><th>decision</th><th>detail</th></tr>", rows, limit, 3, "decisions")
        if rows
        else '<p class="muted">Every image met the floor at the asked rate.</p>'
    )
    head = f"Floor {_num(floor)} dB range-PSNR" if floor is not None else "Floor"
    return f"<h2>Quality floor</h2><p>{escape(head)}: {summary}.</p>{table}"


def _figure(uri: str | None, panel: Panel, what: str, caption: str) -> str:
    size = f'width="{panel.width}" height="{panel.height}"'
    if uri is None:
        body = f'<div class="none" style="width:{panel.width}px;height:{panel.height}px">{escape(caption)}</div>'
        return f"<figure>{body}<figcaption>{escape(what)}</figcaption></figure>"
    pixelated = ' class="px"' if panel.enlarged else ""
    return (
        f'<figure><img{pixelated} src="{uri}" {size} alt="{escape(what)}">'
        f"<figcaption>{escape(what)}{': ' + escape(caption) if caption else ''}</figcaption></figure>"
    )


def _panel(panel: Panel) -> str:
    im = panel.image
    facts = [
        f"range-PSNR {_num(im.range_psnr)} dB" if im.range_psnr is not None else "",
        "bit-exact" if im.bit_exact else (f"PSNR {_num(im.psnr)} dB" if im.psnr is not None else ""),
        f"max error {_int(im.max_error)}" if im.max_error is not None else "",
        f"ratio {_num(im.ratio)}:1" if im.ratio is not None else "",
    ]
    where = f"frame {panel.frame + 1} of {panel.frames}" if panel.frames > 1 else ""
    floor = im.floor or {}
    action = FLOOR_ACTIONS.get(str(floor.get("action")), str(floor.get("action")))
    floor_text = f"floor: {action}" + (f" ({floor.get('detail')})" if floor.get("detail") else "") if floor else ""
    cap = " \u00b7 ".join(escape(x) for x in [where, *facts, floor_text] if x)
    head = f'<p class="cap"><b>{escape(panel.label)}</b>: <span class="path">{escape(im.path)}</span><br>{cap}</p>'
    if panel.error:
        return f'<div class="pick">{head}<p class="bad">not shown: {escape(panel.error)}</p></div>'
    if panel.withheld:
        return f'<div class="pick">{head}<p class="muted">pixels not drawn: {escape(panel.withheld)}.</p></div>'
    if panel.images_omitted:
        return f'<div class="pick">{head}<p class="muted">images left out to keep the report small</p></div>'
    trio = (
        _figure(panel.original, panel, "original", panel.window)
        + _figure(panel.compressed, panel, "compressed", "same window")
        + (
            _figure(panel.difference, panel, difference_caption(panel), "")
            if panel.difference
            else _figure(None, panel, "difference", difference_caption(panel))
        )
    )
    return f'<div class="pick">{head}<div class="trio">{trio}</div></div>'


def _legend(floor: float | None) -> str:
    items = [
        '<span><i class="dot" style="background:#1d4ed8"></i>image quality (left axis)</span>',
        '<span><i class="dot" style="background:#9ca3af"></i>ratio (right axis)</span>',
        '<span><i class="dot" style="background:#fff;border:2px solid #111"></i>shown below</span>',
    ]
    if floor is not None:
        items[2:2] = [
            '<span><i class="dot" style="background:#d97706"></i>re-encoded to meet the floor</span>',
            '<span><i class="dot" style="background:#059669"></i>made lossless by the floor</span>',
        ]
        items.append('<span style="color:#dc2626">- - floor</span>')
    return f'<p class="legend">{"".join(items)}</p>'


def _series_section(index: int, s: Series, panels: Sequence[Panel], floor: float | None, chart_points: int) -> str:
    chart = quality_chart(s, floor, (p.image.path for p in panels), max_points=chart_points)
    body = "".join(_panel(p) for p in panels)
    return f'<section id="s{index}"><h3>{escape(s.folder)}</h3>{chart}{body}</section>'


def _kept(record: Mapping[str, Any], limit: int) -> str:
    kept = [f for f in record.get("files") or [] if f.get("action") == "kept"]
    ignored = record.get("ignored") or []
    out = "<h2>Files kept as-is</h2>"
    if kept:
        rows = [
            f'<tr><td class="path">{escape(str(f["path"]))}</td><td class="n">{_bytes(f.get("bytesIn"))}</td>'
            f"<td>{'<span class=bad>warning</span> ' if f.get('warning') else ''}{escape(str(f.get('reason') or ''))}</td></tr>"
            for f in kept
        ]
        out += _table('<tr><th>file</th><th class="n">size</th><th>reason</th></tr>', rows, limit, 3, "files")
    else:
        out += '<p class="muted">None: every file was re-encoded.</p>'
    if ignored:
        rows = [
            f'<tr><td class="path">{escape(str(i.get("path")))}</td><td>{escape(str(i.get("reason") or ""))}</td></tr>'
            for i in ignored
        ]
        out += f"<h3>Not part of the study</h3>{_table('', rows, limit, 2, 'objects')}"
    per_file = {f"{f['path']}: {f.get('reason')}" for f in kept if f.get("warning")}
    study_warnings = [w for w in record.get("warnings") or [] if w not in per_file]
    if study_warnings:
        rows = [f"<tr><td>{escape(str(w))}</td></tr>" for w in study_warnings]
        out += f"<h3>Study warnings</h3>{_table('', rows, limit, 1, 'warnings')}"
    return out


def _footer(record: Mapping[str, Any]) -> str:
    version = (record.get("software") or {}).get("pipeline")
    return (
        '<h2>How to read this</h2><p class="muted">Range-PSNR is 20\u00b7log10 of the source image\'s value range '
        "(max \u2212 min over all its frames) over the RMSE of the compressed one; unlike PSNR against the bit depth's "
        "full scale, it does not flatter images that use a small part of that range. Per folder, the worst image "
        "(lowest range-PSNR) and the median one are shown, the middle frame of a multi-frame object, as thumbnails: "
        "original and compressed through the same window, and the difference amplified by the stated factor "
        "(black = no error; MONOCHROME1 is shown inverted, as a viewer shows it). "
        "Images enlarged to fit are drawn with square pixels. Secondary captures, ultrasound and dose or screen "
        "images are measured but not drawn: their pixels often show names or dates. "
        "All measurements are over the whole object."
        + (f" Pipeline {escape(str(version))}." if version else "")
        + "</p>"
    )


def render_page(
    record: Mapping[str, Any],
    series: Sequence[Series],
    panels: Mapping[str, Sequence[Panel]],
    *,
    rows: int,
    chart_points: int,
) -> str:
    """The whole page. ``panels`` maps the folders shown in detail to their picked images."""
    floor = floor_db(record)
    sections = [
        _series_section(i, s, panels[s.folder], floor, chart_points) for i, s in enumerate(series) if s.folder in panels
    ]
    detail = f"<h2>Series in detail</h2>{_legend(floor)}{''.join(sections)}" if sections else ""
    return "".join(
        [
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            '<meta name="referrer" content="no-referrer"><link rel="icon" href="data:,">',
            f"<title>Compression quality report</title><style>{STYLE}</style></head><body><main>",
            _header(record, floor),
            _totals(record),
            _floor(record, floor, rows),
            _series_table(series, set(panels), floor, rows),
            detail,
            _kept(record, rows),
            _footer(record),
            "</main></body></html>\n",
        ]
    )
