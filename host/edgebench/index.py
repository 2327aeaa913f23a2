"""The results index: one summary row per result file, kept beside the files and queried with DuckDB.

Why DuckDB, and one database file (`<results>/.edgebench/index.duckdb`) rather than Parquet files: the index is
updated in place a few files at a time (new, changed and deleted files), which a database does in one transaction
while Parquet would mean rewriting or accumulating part files; and it is embedded (no server), typed, and answers
the grouping queries of `compare` and `history` without loading every row into Python.

The JSON result files stay the source of truth: the index holds only what can be recomputed from them, is updated
incrementally (a file is re-read when its size or modification time changed; a deleted file drops out; a corrupt
file is remembered with its reason, so it is read once per change), and `bench index --rebuild` (or deleting the
folder) loses nothing. Per run it keeps the flat row `compare` shows, plus a sketch of the latency samples (count,
sum, sum of squares, 101 quantiles) from which a group's statistics are computed without the raw samples; the raw
samples are read from the JSON files only for the groups a comparison tests for significance.
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ResultError
from .results import parse_time

# 1: first version; 2: rows carry the runtime (an index of version 1 is emptied and refilled from the files)
INDEX_VERSION = 2
INDEX_FOLDER = ".edgebench"
INDEX_FILE = "index.duckdb"
# A result created this far after this host's clock is from a machine with a wrong clock: its time is not trusted.
FUTURE_SLACK = datetime.timedelta(days=1)


class IndexUnusable(ResultError):
    """The index cannot be used (too new, locked by another process, DuckDB missing): read the JSON files instead."""


@dataclass
class IndexReport:
    """What an update did, and what a reader must know (one line each)."""

    added: int = 0
    changed: int = 0
    removed: int = 0
    notes: list[str] = field(default_factory=list)


def index_path(folder: Path) -> Path:
    return Path(folder) / INDEX_FOLDER / INDEX_FILE


def available() -> bool:
    try:
        import duckdb  # noqa: F401
    except ImportError:
        return False
    return True


def _connect(folder: Path, rebuild: bool = False):
    try:
        import duckdb
    except ImportError as exc:
        raise IndexUnusable("the results index needs DuckDB", "pip install 'edgebench[index]'") from exc
    path = index_path(folder)
    if rebuild and path.exists():
        path.unlink()
        wal = path.with_name(path.name + ".wal")
        if wal.exists():
            wal.unlink()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = duckdb.connect(str(path))
    except OSError as exc:
        raise IndexUnusable(f"cannot create the results index in {path.parent}: {exc.strerror or exc}") from exc
    except duckdb.Error as exc:  # another process holds it, or the file is not a DuckDB database
        raise IndexUnusable(f"cannot open the results index {path}: {' '.join(str(exc).split())[:200]}",
                            "bench index --rebuild remakes it from the result files") from exc
    try:
        connection.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        found = connection.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        if found is None:
            connection.execute("INSERT INTO meta VALUES ('version', ?)", [str(INDEX_VERSION)])
        elif int(found[0]) > INDEX_VERSION:
            connection.close()
            raise IndexUnusable(f"the results index {path} is version {found[0]}, newer than this edgebench's "
                                f"({INDEX_VERSION})", "upgrade edgebench, or remake it: bench index --rebuild")
        elif int(found[0]) < INDEX_VERSION:  # its rows lack what this version groups by: read every file again
            connection.execute("DROP TABLE IF EXISTS runs")
            connection.execute("DROP TABLE IF EXISTS problems")
            connection.execute("UPDATE meta SET value = ? WHERE key = 'version'", [str(INDEX_VERSION)])
        connection.execute("""CREATE TABLE IF NOT EXISTS runs (
            path VARCHAR PRIMARY KEY, size BIGINT, mtime_ns BIGINT, content_sha VARCHAR, run_id VARCHAR,
            created_at VARCHAR, status VARCHAR, row_json VARCHAR, sketch_n BIGINT, sketch_sum DOUBLE,
            sketch_sumsq DOUBLE, sketch_q BLOB)""")
        connection.execute("""CREATE TABLE IF NOT EXISTS problems (
            path VARCHAR PRIMARY KEY, size BIGINT, mtime_ns BIGINT, reason VARCHAR)""")
    except duckdb.Error as exc:
        connection.close()
        raise IndexUnusable(f"the results index {path} is damaged: {' '.join(str(exc).split())[:200]}",
                            "bench index --rebuild remakes it from the result files") from exc
    return connection


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    """relative path -> (size, mtime_ns) of every result file under folder (hidden folders and files skipped)."""
    found = {}
    root = os.path.join(str(folder), "")
    stack = [root]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            elif entry.name.endswith(".json"):  # a FIFO, a device or a dangling link too: refused when read, reported
                relative = entry.path[len(root):]
                try:
                    stat = entry.stat()
                    found[relative] = (stat.st_size, stat.st_mtime_ns)
                except OSError:
                    found[relative] = (-1, -1)
    return found


def _summarize(path: Path) -> tuple[dict, dict | None, str, dict]:
    """({row, facts}, sketch, content sha256, document) of one result file; ResultError when it is unusable."""
    import hashlib

    from .report import run_facts, run_row
    from .results import load_result
    from .stats import all_samples_ns, sketch_of

    document = load_result(path)
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ResultError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    # Empty fields are left out (a reader's .get gives None): a smaller row reads faster, 100,000 times over.
    row = {"row": {k: v for k, v in run_row(document).items() if v is not None}, "facts": run_facts(document)}
    sketch = None
    measurements = document.get("measurements") or {}
    if document["status"] == "ok" and measurements.get("repeats"):
        sketch = sketch_of(all_samples_ns(measurements))
    return row, sketch, hashlib.sha256(content).hexdigest(), document


def update(folder: Path, rebuild: bool = False) -> IndexReport:
    """Bring the folder's index up to date with its result files (or remake it)."""

    folder = Path(folder)
    connection = _connect(folder, rebuild)
    try:
        return _update(connection, folder)
    finally:
        connection.close()


def _update(connection, folder: Path) -> IndexReport:
    import numpy as np

    report = IndexReport()
    known = {p: (s, m) for p, s, m in connection.execute("SELECT path, size, mtime_ns FROM runs").fetchall()}
    bad = {p: (s, m) for p, s, m in connection.execute("SELECT path, size, mtime_ns FROM problems").fetchall()}
    files = _listing(folder)
    gone = [p for p in [*known, *bad] if p not in files]
    stale = [p for p, stat in files.items() if known.get(p, bad.get(p)) != stat]
    connection.execute("BEGIN TRANSACTION")
    for path in gone:
        connection.execute("DELETE FROM runs WHERE path = ?", [path])
        connection.execute("DELETE FROM problems WHERE path = ?", [path])
    report.removed = len([p for p in gone if p in known])
    rows: list[tuple] = []
    for relative in stale:
        if relative in known or relative in bad:
            report.changed += 1
            connection.execute("DELETE FROM runs WHERE path = ?", [relative])
            connection.execute("DELETE FROM problems WHERE path = ?", [relative])
        else:
            report.added += 1
        size, mtime = files[relative]
        try:
            summary, sketch, sha, _ = _summarize(folder / relative)
        except ResultError as exc:
            connection.execute("INSERT INTO problems VALUES (?, ?, ?, ?)", [relative, size, mtime, str(exc)])
            continue
        q = np.asarray(sketch["q"], dtype=np.float64).tobytes() if sketch else None
        rows.append((relative, size, mtime, sha, summary["row"]["run_id"], summary["row"].get("created_at"),
                     summary["row"]["status"], json.dumps(summary, default=_plain), sketch["n"] if sketch else None,
                     sketch["sum"] if sketch else None, sketch["sumsq"] if sketch else None, q))
        if len(rows) >= INSERT_BATCH:
            _insert(connection, rows)
            rows = []
    _insert(connection, rows)
    connection.execute("COMMIT")
    if known and (report.changed or report.removed):  # the index disagreed with the files: said, and mended
        report.notes.append(f"index of {folder}: {report.changed} changed and {report.removed} deleted result "
                            "file(s) since it was last updated; re-read")
    return report


INSERT_BATCH = 5000  # rows per insert: one statement per file would dominate a first index of 100,000 files
SMALL_BATCH = 500


def _insert(connection, rows: list[tuple]) -> None:
    """Many index rows in one statement (through a pandas frame DuckDB reads in place); a few, one by one (pandas
    would cost more to import than they take)."""
    if not rows:
        return
    if len(rows) < SMALL_BATCH:
        connection.executemany("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        return
    import pandas as pd

    frame = pd.DataFrame(rows, columns=["path", "size", "mtime_ns", "content_sha", "run_id", "created_at", "status",
                                        "row_json", "sketch_n", "sketch_sum", "sketch_sumsq", "sketch_q"])
    frame["sketch_n"] = frame["sketch_n"].astype("Int64")  # nullable: a failed run has no sketch
    connection.register("new_runs", frame)
    try:
        connection.execute("INSERT INTO runs SELECT path, size, mtime_ns, content_sha, run_id, created_at, status, "
                           "row_json, sketch_n, sketch_sum, sketch_sumsq, CAST(sketch_q AS BLOB) FROM new_runs")
    finally:
        connection.unregister("new_runs")


def _json_reader():
    """orjson's loads when installed (the `index` extra: 100,000 rows decode in a fraction of the time), else json's."""
    try:
        import orjson

        return orjson.loads
    except ImportError:
        return json.loads


def _plain(value):
    """numpy scalars in a row, as JSON numbers."""
    try:
        return value.item()
    except AttributeError:
        return str(value)


@dataclass
class Records:
    runs: list
    problems: list[str]  # files skipped, one line each
    notes: list[str]  # what the index did or doubts


def records(paths: list[Path], now: datetime.datetime | None = None) -> Records:
    """Every run under the folders `paths`, from their indexes (updated first), merged by run id: the same run in
    two folders counts once; two different files claiming one run id are both reported and neither used."""
    import numpy as np

    now = now or datetime.datetime.now(datetime.timezone.utc)
    from .report import RunRecord

    by_id: dict[str, list[RunRecord]] = {}
    problems: list[str] = []
    notes: list[str] = []
    for folder in map(Path, paths):
        if not folder.is_dir():
            raise IndexUnusable(f"{folder} is not a folder: the index covers folders of results")
        connection = _connect(folder)
        try:
            notes += _update(connection, folder).notes
            rows = connection.execute("SELECT path, content_sha, row_json, sketch_n, sketch_sum, sketch_sumsq, sketch_q "
                                      "FROM runs ORDER BY path").fetchall()
            problems += [reason for (reason,) in connection.execute("SELECT reason FROM problems ORDER BY path").fetchall()]
        finally:
            connection.close()
        prefix = os.path.join(str(folder), "")
        loads = _json_reader()
        for path, sha, row_json, n, total, sumsq, q in rows:
            summary = loads(row_json)
            sketch = {"n": n, "sum": total, "sumsq": sumsq, "q": np.frombuffer(q, dtype=np.float64)} if q else None
            by_id.setdefault(summary["row"]["run_id"], []).append(
                RunRecord(summary["row"], summary["facts"], sketch, prefix + path, sha))
    runs = []
    for run_id, copies in by_id.items():
        if len({c.content_sha for c in copies}) > 1:
            problems.append(f"run {run_id} is in {len(copies)} files that differ ({', '.join(str(c.path) for c in copies)}): "
                            "neither is used; keep the right one")
            continue
        runs.append(copies[0])
    for record in runs:
        created = parse_time(record.row.get("created_at"))
        if created is not None and created > now + FUTURE_SLACK:
            notes.append(f"run {record.row['run_id']} says it was created at {record.row['created_at']}, after this "
                         "host's clock: that board's clock is wrong, so trends place it by its time with care")
    return Records(runs, problems, notes)

