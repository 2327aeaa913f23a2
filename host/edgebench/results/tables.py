"""Terminal tables a person can read: numbers are never cut, columns that do not fit are left out (and said so).

Text columns (names, settings) may wrap; number columns keep their full width. When the terminal is too narrow
for every column, the last ones go first: each command lists its columns most important first. Everything
left out is still in `--json` and `-f csv`.
"""

from __future__ import annotations

# Narrowest a wrapping text column gets before columns are dropped instead.
MIN_TEXT_WIDTH = 12
GAP = 2  # rich's padding between columns with box=None


def choose_columns(headers: list[str], rows: list[list[str]], text: set, width: int, keep: int = 1) -> list[int]:
    """Indices of the columns that fit in `width`: numbers at full width, text at least MIN_TEXT_WIDTH (or its
    longest word). The first `keep` columns always stay."""
    def need(index: int) -> int:
        cells = [headers[index], *(row[index] for row in rows)]
        widest = max(len(c) for c in cells)
        if index not in text:
            return widest
        longest_word = max((len(w) for c in cells for w in c.split()), default=1)
        return min(widest, max(MIN_TEXT_WIDTH, longest_word))

    chosen = list(range(len(headers)))
    while len(chosen) > keep and sum(need(i) for i in chosen) + GAP * (len(chosen) - 1) > width:
        chosen.pop()
    return chosen


def pick(headers: list[str], names: list[str] | None) -> list[int] | None:
    """--columns p50,p90: the columns asked for, by header (case and spaces ignored), in that order."""
    if not names:
        return None
    from ..errors import InputError

    normal = {h.lower().replace(" ", ""): i for i, h in enumerate(headers)}
    picked = []
    for name in names:
        key = name.lower().replace(" ", "")
        matches = [i for h, i in normal.items() if h == key] or [i for h, i in normal.items() if h.startswith(key)]
        if not matches:
            if _known_column(key):
                continue  # a column edgebench shows when the results have it (energy, pipeline stages): none here
            raise InputError(f"--columns {name!r}: no such column", f"columns: {', '.join(headers)}")
        picked.append(matches[0])
    if not picked:
        raise InputError(f"--columns {','.join(names)}: none of these columns is in this table",
                         f"columns: {', '.join(headers)}")
    return picked


def _known_column(key: str) -> bool:
    """A header some edgebench table has (by the same matching rule as pick)."""
    from .report import HEADERS, TEXT_HEADERS

    known = [h.lower().replace(" ", "") for h in [*HEADERS.values(), *TEXT_HEADERS]]
    return any(h == key or h.startswith(key) for h in known)


def print_table(console, headers: list[str], rows: list[list[str]], text_headers: set, columns: list[str] | None = None,
                err_console=None) -> None:
    """Draw the table on `console` (a rich Console) in its width; say on stderr what did not fit."""
    from rich.table import Table

    text = {i for i, h in enumerate(headers) if h in text_headers}
    picked = pick(headers, columns)
    chosen = picked if picked is not None else list(range(len(headers)))
    if console.is_terminal:  # asked-for columns too: what does not fit is left out and named, never cropped
        kept = choose_columns([headers[i] for i in chosen], [[r[i] for i in chosen] for r in rows],
                              {n for n, i in enumerate(chosen) if i in text}, console.width)
        chosen = [chosen[n] for n in kept]
    skipped = [i for i in (picked if picked is not None else range(len(headers))) if i not in chosen]
    table = Table(box=None, pad_edge=False)
    for index in chosen:
        if index in text:
            table.add_column(headers[index], justify="left", overflow="fold", min_width=min(
                MIN_TEXT_WIDTH, max(len(c) for c in [headers[index], *(r[index] for r in rows)])))
        else:
            widest = max(len(c) for c in [headers[index], *(r[index] for r in rows)])
            table.add_column(headers[index], justify="right", no_wrap=True, min_width=widest)
    for row in rows:
        table.add_row(*[row[i] for i in chosen])
    console.print(table)
    left_out = [headers[i] for i in skipped]
    if left_out and err_console is not None:
        err_console.print(f"({len(left_out)} more columns did not fit: {', '.join(left_out)}; pick with --columns, "
                          "or see them all with --json or -f csv)", highlight=False, soft_wrap=True)


def aligned(headers: list[str], rows: list[list[str]]) -> list[str]:
    """Plain left-aligned columns (for reports printed as lines, and their HTML <pre>)."""
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows)]
    return ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [headers, *rows]]
