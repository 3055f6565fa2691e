"""The project's tables: plain text (reports, `query`, `keys list`), Markdown and HTML.

The values arrive as strings; a column whose every cell reads as a number is
right-aligned."""

from __future__ import annotations

import html
from collections.abc import Sequence

Row = Sequence[str]


def _numeric(text: str) -> bool:
    stripped = text.lstrip("$+-–").replace(",", "").replace("%", "").replace(".", "", 1)
    return stripped.isdigit()


def text_table(headers: Row, rows: Sequence[Row], empty: str | None = "(none)") -> str:
    """Columns under a header rule; `empty` stands for no rows (None: the header alone)."""
    if not rows and empty is not None:
        return empty
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    numeric = [bool(rows) and all(_numeric(row[i]) for row in rows) for i in range(len(headers))]

    def line(cells: Row) -> str:
        return "  ".join(
            cell.rjust(width) if is_number else cell.ljust(width)
            for cell, width, is_number in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line(headers), line(["-" * width for width in widths]), *map(line, rows)])


def markdown_table(headers: Row, rows: Sequence[Row]) -> str:
    if not rows:
        return "_(none)_"
    numeric = [all(_numeric(row[i]) for row in rows) for i in range(len(headers))]

    def escape(cell: str) -> str:
        return cell.replace("|", "\\|")

    return "\n".join(
        [
            "| " + " | ".join(map(escape, headers)) + " |",
            "|" + "|".join("---:" if is_number else "---" for is_number in numeric) + "|",
            *("| " + " | ".join(map(escape, row)) + " |" for row in rows),
        ]
    )


def html_table(headers: Row, rows: Sequence[Row]) -> str:
    if not rows:
        return "<p class='none'>(none)</p>"
    numeric = [all(_numeric(row[i]) for row in rows) for i in range(len(headers))]

    def cell(tag: str, text: str, is_number: bool) -> str:
        return f"<{tag}{' class=num' if is_number else ''}>{html.escape(text)}</{tag}>"

    head = "".join(cell("th", h, n) for h, n in zip(headers, numeric, strict=True))
    body = "".join(
        "<tr>" + "".join(cell("td", c, n) for c, n in zip(row, numeric, strict=True)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
