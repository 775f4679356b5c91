"""The pieces `report.html` is made of: escaped text, tables, figures embedded as data URIs, the page and its CSS.

Everything a page needs is inside it: images are base64 `data:` URIs, the style is inline, there is no script and
no address to fetch (the favicon is an empty `data:` URI, so a browser asks for nothing either). Status is said in
words ("none", "3 found"), colour only repeats it; the colours follow the reader's light or dark scheme.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

CSS = """
:root { color-scheme: light dark; --fg: #1b1f24; --bg: #ffffff; --muted: #57606a; --line: #d0d7de;
  --panel: #f6f8fa; --warn: #9a6700; --ok: #1a7f37; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e6edf3; --bg: #0d1117; --muted: #9da7b3; --line: #30363d; --panel: #161b22; --warn: #d29922;
    --ok: #3fb950; }
}
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg);
  max-width: 1100px; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid var(--line); padding-top: 0.8rem; }
h3 { font-size: 1.05rem; margin-bottom: 0.3rem; }
nav ul { display: flex; flex-wrap: wrap; gap: 0.4rem 1rem; list-style: none; padding: 0; }
a { color: inherit; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
th { background: var(--panel); }
td.num { text-align: right; }
pre { background: var(--panel); border: 1px solid var(--line); padding: 0.8rem; overflow: auto; font-size: 13px;
  max-height: 26rem; }
figure { margin: 0.5rem 0 1.2rem; }
.row { display: flex; flex-wrap: wrap; gap: 1rem; } .row figure { flex: 1 1 360px; margin: 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); background: #ffffff; }
figcaption, .muted { color: var(--muted); font-size: 0.9rem; }
.missing { color: var(--muted); font-style: italic; }
.warn { color: var(--warn); font-weight: 600; } .ok { color: var(--ok); font-weight: 600; }
.path { word-break: break-all; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def number(value: Any, digits: int = 4) -> str:
    """A figure as text: floats to `digits` places, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def with_interval(value: Any, interval: Sequence[float] | None) -> str:
    """`0.9542 (0.908-0.978)`: a figure and its 95% interval, when it has one."""
    if interval is None or len(interval) != 2:
        return number(value)
    return f"{number(value)} ({interval[0]:.3f}-{interval[1]:.3f})"


def missing(what: str) -> str:
    """The one line a section shows instead of what its file would have given."""
    return f'<p class="missing">{esc(what)}</p>'


def status(count: int, found: str = "found") -> str:
    """A count said in words; the colour only repeats it."""
    if not count:
        return '<span class="ok">none</span>'
    return f'<span class="warn">{count} {esc(found)}</span>'


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    """An HTML table; cells are escaped, the columns in `numeric` right-aligned."""
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{esc(c)}</td>' if i in numeric else f"<td>{esc(c)}</td>" for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    if not body:
        return missing("(no rows)")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def definitions(pairs: Iterable[tuple[str, Any]]) -> str:
    """Label: value rows, as a two-column table (values escaped)."""
    rows = "".join(f'<tr><th scope="row">{esc(k)}</th><td>{esc(v)}</td></tr>' for k, v in pairs)
    return f"<table><tbody>{rows}</tbody></table>" if rows else ""


def figure(path: Path, alt: str, caption: str) -> str:
    """An image file embedded as a data URI, with its alt text and caption; a missing file says so in one line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError:
        return missing(f"No {path.name} in this folder.")
    kind = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
    uri = f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"
    return (
        f'<figure><img src="{uri}" alt="{esc(alt)}" loading="eager" decoding="sync">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def read_json(path: Path) -> tuple[Any, str | None]:
    """(content, None), or (None, the one line a section shows: absent or unreadable)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8")), None
    except FileNotFoundError:
        return None, f"No {Path(path).name} in this run (an older run, or the step did not run)."
    except (OSError, ValueError) as exc:
        return None, f"{Path(path).name} could not be read ({exc})."


def read_text(path: Path) -> tuple[str | None, str | None]:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace"), None
    except FileNotFoundError:
        return None, f"No {Path(path).name} in this run."
    except OSError as exc:
        return None, f"{Path(path).name} could not be read ({exc})."


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document: a title, a table of contents, then each (anchor, heading, body) section."""
    nav = "".join(f'<li><a href="#{esc(anchor)}">{esc(heading)}</a></li>' for anchor, heading, _ in sections)
    body = "\n".join(
        f'<section id="{esc(anchor)}" aria-labelledby="{esc(anchor)}-h"><h2 id="{esc(anchor)}-h">{esc(heading)}</h2>'
        f"\n{content}\n</section>"
        for anchor, heading, content in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="color-scheme" content="light dark">\n<link rel="icon" href="data:,">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f'<header><h1>{esc(title)}</h1><p class="muted">{esc(subtitle)}</p>'
        f'<nav aria-label="sections"><ul>{nav}</ul></nav></header>\n<main>\n{body}\n</main>\n</body>\n</html>\n'
    )
