"""The report as a list of blocks, rendered twice: Markdown (report.md) and self-contained HTML (report.html)."""

from __future__ import annotations

import base64
import html
from pathlib import Path


class Doc:
    """Blocks rendered twice: Markdown (report.md) and self-contained HTML (report.html)."""

    def __init__(self) -> None:
        self.md: list[str] = []
        self.html: list[str] = []

    def h(self, text: str, level: int = 2) -> None:
        self.md.append(f"{'#' * level} {text}\n")
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def p(self, text: str) -> None:
        self.md.append(text + "\n")
        self.html.append(f"<p>{html.escape(text)}</p>")

    def bullets(self, items: list[str]) -> None:
        self.md.append("\n".join(f"- {i}" for i in items) + "\n")
        self.html.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>")

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        def cell(c: str) -> str:  # a newline or a bare '|' would end or split a Markdown table row
            return " / ".join(x.strip() for x in c.splitlines()).replace("|", "\\|")

        self.md.append(
            "| "
            + " | ".join(map(cell, header))
            + " |\n|"
            + "---|" * len(header)
            + "\n"
            + "".join("| " + " | ".join(map(cell, r)) + " |\n" for r in rows)
        )
        self.html.append(
            "<table><tr>"
            + "".join(f"<th>{html.escape(c)}</th>" for c in header)
            + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
            + "</table>"
        )

    def image(self, path: Path, alt: str, rel: str | None = None) -> None:
        self.md.append(f"![{alt}]({rel or path.name})\n")
        data = base64.b64encode(path.read_bytes()).decode()
        self.html.append(f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>')

    def render_html(self, title: str) -> str:
        style = (
            "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
            "table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px}"
            "th{background:#f3f3f3}img{max-width:100%}li{margin:.2em 0}"
        )
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>" + "\n".join(self.html) + "</body></html>\n"
        )
