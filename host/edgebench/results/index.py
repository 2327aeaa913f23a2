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

import contextlib
import datetime
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FileWriteError, IndexUnusable, ResultError
from .files import parse_time, walk_result_files
from .view import Result

# 1: first version; 2: rows carry the runtime; 3: rows carry the file's ctime and a MAC; 4: sketches hold
# nearest-rank quantiles, like the tables (an index of an older version is emptied and refilled from the files)
INDEX_VERSION = 4
INDEX_FOLDER = ".edgebench"
INDEX_FILE = "index.duckdb"
WAL_FILE = INDEX_FILE + ".wal"
SPILL_FOLDER = INDEX_FILE + ".tmp"  # DuckDB's temporary files, when a query spills
SEAL_FILE = "index.seal"  # binds the database file as edgebench left it to this user's key: a copied index is not ours
LOCK_FILE = "index.lock"  # one edgebench at a time updates a folder's index
KEY_FILE = "index.key"  # in the host cache, never in a results folder: what a results folder cannot forge
# A result created this far after this host's clock is from a machine with a wrong clock: its time is not trusted.
FUTURE_SLACK = datetime.timedelta(days=1)
LOCK_WAIT_S = 5.0
RUN_COLUMNS = ("path", "size", "mtime_ns", "ctime_ns", "content_sha", "run_id", "created_at", "status", "row_json",
               "sketch_n", "sketch_sum", "sketch_sumsq", "sketch_q", "mac")
PROBLEM_COLUMNS = ("path", "size", "mtime_ns", "ctime_ns", "reason", "mac")


class _Damaged(Exception):
    """What the index holds is not what edgebench wrote there: the index is remade from the result files."""


@dataclass
class IndexReport:
    """What an update did, and what a reader must know (one line each)."""

    added: int = 0
    changed: int = 0
    removed: int = 0
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # files not read (links out of the folder)


def index_path(folder: Path) -> Path:
    return Path(folder) / INDEX_FOLDER / INDEX_FILE


def available() -> bool:
    try:
        import duckdb  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------ the index's own files
# A results folder arrives from elsewhere (a tarball, a CI artefact, a checkout): `.edgebench/` and everything in it
# is checked before DuckDB opens or writes anything there. A link would make DuckDB write where it points; a hard
# link would change another file; a file of another user, or one anyone may write, may hold rows edgebench did not
# write. Any of these: the index is ignored (one warning line) and the JSON files are read.
def _checked_folder(folder: Path) -> Path:
    """The index folder of `folder`, when edgebench may keep its index there; IndexUnusable naming why not."""
    base = Path(folder) / INDEX_FOLDER
    fix = f"delete {base}: it holds only the index, which edgebench remakes from the result files"
    parent = _lstat(Path(folder).resolve())
    if parent is not None and (parent.st_uid != os.geteuid() or parent.st_mode & stat.S_IWOTH):
        # whoever else may change the folder could swap `.edgebench` for a link between a check and a write
        raise IndexUnusable(f"{folder} may be changed by another user: the results index is not used",
                            "copy the results into a folder of your own to use the index")
    info = _lstat(base)
    if info is None:
        return base
    if stat.S_ISLNK(info.st_mode):
        raise IndexUnusable(f"{base} is a symbolic link, not a folder edgebench made: the results index is not used", fix)
    if not stat.S_ISDIR(info.st_mode):
        raise IndexUnusable(f"{base} is not a folder: the results index is not used", fix)
    if info.st_uid != os.geteuid():
        raise IndexUnusable(f"{base} belongs to another user: the results index is not used", fix)
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):  # edgebench makes it 0700: this one is not edgebench's
        raise IndexUnusable(f"{base} may be written by others: the results index is not used", fix)
    for name in (INDEX_FILE, WAL_FILE, SEAL_FILE, LOCK_FILE):
        path = base / name
        found = _lstat(path)
        if found is None:
            continue
        if stat.S_ISLNK(found.st_mode):
            problem = "is a symbolic link"
        elif not stat.S_ISREG(found.st_mode):
            problem = "is not a regular file"
        elif found.st_nlink != 1:
            problem = "has other hard links (writing it would change another file)"
        elif found.st_uid != os.geteuid():
            problem = "belongs to another user"
        elif found.st_mode & stat.S_IWOTH:
            problem = "may be written by anyone"
        else:
            continue
        raise IndexUnusable(f"{path} {problem}: the results index is not used", fix)
    spill = _lstat(base / SPILL_FOLDER)
    if spill is not None and (not stat.S_ISDIR(spill.st_mode) or spill.st_uid != os.geteuid()):
        raise IndexUnusable(f"{base / SPILL_FOLDER} is not a folder of this user's: the results index is not used", fix)
    return base


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IndexUnusable(f"cannot look at {path}: {exc.strerror or exc}: the results index is not used") from exc


@contextlib.contextmanager
def _locked(base: Path):
    """Hold the folder's index lock (one edgebench updates an index at a time; another waits a little, then reads
    the files)."""
    import fcntl
    import time

    try:
        base.mkdir(mode=0o700, exist_ok=True)
        handle = os.open(base / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise IndexUnusable(f"cannot use the results index in {base}: {exc.strerror or exc}") from exc
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise IndexUnusable(f"the results index in {base} is being updated by another edgebench") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(handle)  # releases the lock


def _key() -> bytes:
    """This user's index key (32 random bytes in the host cache, made on first use): rows and seals are MACs under
    it, so an index that came with a results folder, or was changed by hand, is never believed."""
    import secrets

    from ..fileio import cache_dir

    folder = cache_dir()
    path = folder / KEY_FILE
    for _ in range(2):
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
            with os.fdopen(descriptor, "rb") as handle:
                key = handle.read(64) if stat.S_ISREG(os.fstat(descriptor).st_mode) else b""
            if len(key) == 32:
                return key
            raise IndexUnusable(f"{path} is not an edgebench index key", f"delete {path}; edgebench makes a new one")
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise IndexUnusable(f"cannot read the index key {path}: {exc.strerror or exc}") from exc
        try:  # made whole beside it, then linked in: two processes starting at once agree on one key
            folder.mkdir(parents=True, exist_ok=True)
            temporary = folder / f".{KEY_FILE}.{os.getpid()}"
            handle_fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(handle_fd, "wb") as handle:
                handle.write(secrets.token_bytes(32))
            try:
                os.link(temporary, path)
            except FileExistsError:
                pass
            finally:
                temporary.unlink()
        except OSError as exc:
            raise IndexUnusable(f"cannot keep the index key in {folder}: {exc.strerror or exc}") from exc
    raise IndexUnusable(f"cannot make the index key {path}")


def _mac(key: bytes, *parts) -> str:
    """A keyed hash (BLAKE2b, 128 bits) of an index row: only this user's edgebench can make one."""
    import hashlib

    digest = hashlib.blake2b(key=key, digest_size=16)
    for part in parts:
        digest.update(part if isinstance(part, bytes) else str(part).encode("utf-8", "surrogatepass"))
        digest.update(b"\x1f")
    return digest.hexdigest()


def _seal(key: bytes, database: Path) -> str:
    """The file as edgebench left it: device, inode, size and times (a file written in place by anything else, tar
    extracting over it say, keeps its inode but not its change time, which no one can set)."""
    info = os.lstat(database)
    return _mac(key, "seal", info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _write_seal(base: Path, key: bytes) -> None:
    from ..fileio import write_atomically

    database = base / INDEX_FILE
    if database.exists():
        try:
            write_atomically(base / SEAL_FILE, _seal(key, database) + "\n")
        except FileWriteError as exc:
            raise IndexUnusable(f"cannot seal the results index: {exc}") from exc


def _read_seal(base: Path) -> str | None:
    try:
        handle = os.open(base / SEAL_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(handle, "rb") as stream:
        return stream.read(200).decode("ascii", "replace").strip()


def _remove_index(base: Path, names: tuple = (INDEX_FILE, WAL_FILE, SEAL_FILE)) -> None:
    """Delete the index's files (checked plain files of ours, or absent): what the result files remake."""
    for name in names:
        try:
            (base / name).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise IndexUnusable(f"cannot remove the old results index {base / name}: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def _opened(folder: Path, rebuild: bool = False):
    """(DuckDB connection, key, report) on the folder's checked, locked, sealed index; remade when it was not made
    here (its seal) or is damaged."""
    try:
        import duckdb  # noqa: F401  (its absence is said here, once)
    except ImportError as exc:
        raise IndexUnusable("the results index needs DuckDB", "pip install 'edgebench[index]'") from exc
    base = _checked_folder(folder)
    key = _key()
    with _locked(base):
        base = _checked_folder(folder)  # again, now that no other edgebench changes it
        report = IndexReport()
        database = base / INDEX_FILE
        if rebuild:
            _remove_index(base)
        elif database.exists() and _read_seal(base) != _seal(key, database):
            report.warnings.append(f"the results index {database} was not made here by this user's edgebench (it was "
                                   "copied or unpacked with the results): not believed; remade from the result files")
            _remove_index(base)
        elif (base / WAL_FILE).exists():  # edgebench closes cleanly: a log left beside it is a crash's, or put there
            report.notes.append(f"a write-ahead log was left beside {database}: discarded")
            _remove_index(base, (WAL_FILE,))
        try:
            connection = _connect(database)
        except _Damaged as exc:
            report.warnings.append(f"the results index {database} is damaged ({exc}): remade from the result files")
            _remove_index(base)
            try:
                connection = _connect(database)
            except _Damaged as again:
                raise IndexUnusable(f"cannot make the results index {database}: {again}") from None
        try:
            yield connection, key, report
        finally:
            connection.close()
            _write_seal(base, key)  # the file as this process left it, and no one else since


def _connect(database: Path):
    """A connection to the index with its tables as this version makes them; _Damaged when the file is not that."""
    import duckdb

    try:
        connection = duckdb.connect(str(database))
    except OSError as exc:
        raise IndexUnusable(f"cannot create the results index {database}: {exc.strerror or exc}") from exc
    except duckdb.Error as exc:
        if isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower():  # another process holds it
            raise IndexUnusable(f"cannot open the results index {database}: {_short(exc)}",
                                "bench index --rebuild remakes it from the result files") from exc
        raise _Damaged(_short(exc)) from exc  # not a DuckDB database, or one this DuckDB cannot read
    try:
        _prepare(connection, database)
    except duckdb.Error as exc:
        connection.close()
        raise _Damaged(_short(exc)) from exc
    except (_Damaged, ResultError):
        connection.close()
        raise
    return connection


def _prepare(connection, database: Path) -> None:
    """Tables of this version (an older version's emptied: its rows lack what this one keeps); a newer index is
    refused; tables that are not the ones edgebench makes (a view, other columns) are damage, found before any
    query reads them (a view runs the SQL of whoever made it)."""
    kinds = dict(connection.execute("SELECT table_name, table_type FROM information_schema.tables "
                                    "WHERE table_schema = 'main'").fetchall())
    for table, kind in kinds.items():
        if table not in ("meta", "runs", "problems") or kind != "BASE TABLE":
            raise _Damaged(f"it holds a {str(kind).lower()} {str(table)[:40]!r} edgebench does not make")
    connection.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    found = connection.execute("SELECT value FROM meta WHERE key = 'version'").fetchall()
    if not found:
        connection.execute("INSERT INTO meta VALUES ('version', ?)", [str(INDEX_VERSION)])
        version = INDEX_VERSION
    else:
        text = str(found[0][0])
        if not text.isdigit() or len(found) != 1:
            raise _Damaged(f"its version is {text[:20]!r}, not a number")
        version = int(text)
    if version > INDEX_VERSION:
        raise IndexUnusable(f"the results index {database} is version {version}, newer than this edgebench's ({INDEX_VERSION})",
                            "upgrade edgebench, or remake it: bench index --rebuild")
    if version < INDEX_VERSION:  # its rows lack what this version keeps: read every file again
        connection.execute("DROP TABLE IF EXISTS runs")
        connection.execute("DROP TABLE IF EXISTS problems")
        connection.execute("UPDATE meta SET value = ? WHERE key = 'version'", [str(INDEX_VERSION)])
    connection.execute("""CREATE TABLE IF NOT EXISTS runs (
        path VARCHAR PRIMARY KEY, size BIGINT, mtime_ns BIGINT, ctime_ns BIGINT, content_sha VARCHAR, run_id VARCHAR,
        created_at VARCHAR, status VARCHAR, row_json VARCHAR, sketch_n BIGINT, sketch_sum DOUBLE,
        sketch_sumsq DOUBLE, sketch_q BLOB, mac VARCHAR)""")
    connection.execute("""CREATE TABLE IF NOT EXISTS problems (
        path VARCHAR PRIMARY KEY, size BIGINT, mtime_ns BIGINT, ctime_ns BIGINT, reason VARCHAR, mac VARCHAR)""")
    for table, columns in (("meta", ("key", "value")), ("runs", RUN_COLUMNS), ("problems", PROBLEM_COLUMNS)):
        have = tuple(name for (name,) in connection.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'main' AND table_name = ? "
            "ORDER BY ordinal_position", [table]).fetchall())
        if have != columns:
            raise _Damaged(f"its {table} table has other columns")


def _listing(folder: Path, skipped: list[str]) -> dict[str, tuple[int, int, int]]:
    """relative path -> (size, mtime_ns, ctime_ns) of every result file under folder (hidden folders and files
    skipped; a file that cannot be looked at gets -1s: it is refused when read, and reported)."""
    found = {}
    root = os.path.join(str(folder), "")
    for path in walk_result_files(folder, skipped):
        try:
            info = os.stat(path)
            found[path[len(root):]] = (info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        except OSError:
            found[path[len(root):]] = (-1, -1, -1)
    return found


def _summarize(path: Path) -> tuple[dict, dict | None, str, dict]:
    """({row, facts}, sketch, content sha256, document) of one result file; ResultError when it is unusable."""
    from ..agentlib import sha256_bytes
    from .report import run_facts, run_row
    from .files import load_result
    from .stats import all_samples_ns, sketch_of

    document = load_result(path)
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ResultError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    # Empty fields are left out (a reader's .get gives None): a smaller row reads faster, 100,000 times over.
    # A figure that is no number (all-zero samples give an infinite throughput) is left out like an empty one: the
    # row must be JSON that any reader parses.
    row = {"row": {k: v for k, v in run_row(document).items() if v is not None and not _non_finite(v)},
           "facts": run_facts(document)}
    sketch = None
    result = Result(document)
    if result.ok:
        sketch = sketch_of(all_samples_ns(result.measurements))
    return row, sketch, sha256_bytes(content), document


def _non_finite(value) -> bool:
    import math

    return isinstance(value, float) and not math.isfinite(value)


def update(folder: Path, rebuild: bool = False) -> IndexReport:
    """Bring the folder's index up to date with its result files (or remake it)."""
    import duckdb

    folder = Path(folder)
    with _opened(folder, rebuild) as (connection, key, report):
        try:
            return _update(connection, key, folder, report)
        except (duckdb.Error, _Damaged) as exc:
            damage = exc
    with _opened(folder, rebuild=True) as (connection, key, report):
        report.warnings.append(f"the results index {index_path(folder)} was damaged ({_short(damage)}): remade from "
                               "the result files")
        return _update(connection, key, folder, report)


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def _update(connection, key: bytes, folder: Path, report: IndexReport) -> IndexReport:
    """Read what changed: files new, gone, or whose size, modification or change time differ from their row (a
    file copied or extracted has a new change time, so a row is never trusted for a file it did not read)."""
    import numpy as np

    known, shas = {}, {}
    for path, size, mtime, ctime, sha in connection.execute("SELECT path, size, mtime_ns, ctime_ns, content_sha FROM runs").fetchall():
        known[path], shas[path] = (size, mtime, ctime), sha
    bad = {p: (s, m, c) for p, s, m, c in connection.execute("SELECT path, size, mtime_ns, ctime_ns FROM problems").fetchall()}
    files = _listing(folder, report.skipped)
    gone = [p for p in [*known, *bad] if p not in files]
    stale = [p for p, found in files.items() if known.get(p, bad.get(p)) != found]
    connection.execute("BEGIN TRANSACTION")
    for path in gone:
        connection.execute("DELETE FROM runs WHERE path = ?", [path])
        connection.execute("DELETE FROM problems WHERE path = ?", [path])
    report.removed = len([p for p in gone if p in known])
    rows: list[tuple] = []
    for relative in stale:
        again = relative in known or relative in bad
        if again:
            connection.execute("DELETE FROM runs WHERE path = ?", [relative])
            connection.execute("DELETE FROM problems WHERE path = ?", [relative])
        size, mtime, ctime = files[relative]
        try:
            summary, sketch, sha, _ = _summarize(folder / relative)
        except ResultError as exc:
            report.changed += again
            report.added += not again
            connection.execute("INSERT INTO problems VALUES (?, ?, ?, ?, ?, ?)",
                               [relative, size, mtime, ctime, str(exc), _mac(key, relative, size, mtime, ctime, str(exc))])
            continue
        if again and shas.get(relative) == sha:
            pass  # touched, copied or moved in place, same bytes: not a change
        elif again:
            report.changed += 1
        else:
            report.added += 1
        q = np.asarray(sketch["q"], dtype=np.float64).tobytes() if sketch else None
        row_json = json.dumps(summary, default=_plain)
        fields = (relative, size, mtime, ctime, sha, summary["row"]["run_id"], summary["row"].get("created_at"),
                  summary["row"]["status"], row_json, sketch["n"] if sketch else None, sketch["sum"] if sketch else None,
                  sketch["sumsq"] if sketch else None, q)
        rows.append((*fields, _row_mac(key, fields)))
        if len(rows) >= INSERT_BATCH:
            _insert(connection, rows)
            rows = []
    _insert(connection, rows)
    connection.execute("COMMIT")
    if known and (report.changed or report.removed):  # the index disagreed with the files: said, and mended
        report.notes.append(f"index of {folder}: {report.changed} changed and {report.removed} deleted result "
                            "file(s) since it was last updated; re-read")
    return report


def _row_mac(key: bytes, fields: tuple) -> str:
    """A run row's MAC over every column (the sketch's bytes as they are). One message, one hash: at 100,000 rows
    per compare this is on the hot path (about 3 µs a row)."""
    import hashlib

    path, size, mtime, ctime, sha, run_id, created, status, row_json, n, total, sumsq, q = fields
    message = (f"{path}\x1f{size}\x1f{mtime}\x1f{ctime}\x1f{sha}\x1f{run_id}\x1f{created}\x1f{status}\x1f{n}\x1f{total!r}"
               f"\x1f{sumsq!r}\x1f{row_json}\x1f").encode("utf-8", "surrogatepass")
    return hashlib.blake2b(message + (q or b""), key=key, digest_size=16).hexdigest()


INSERT_BATCH = 5000  # rows per insert: one statement per file would dominate a first index of 100,000 files
SMALL_BATCH = 500


def _insert(connection, rows: list[tuple]) -> None:
    """Many index rows in one statement (through a pandas frame DuckDB reads in place); a few, one by one (pandas
    would cost more to import than they take)."""
    if not rows:
        return
    if len(rows) < SMALL_BATCH:
        connection.executemany(f"INSERT INTO runs VALUES ({', '.join('?' * len(RUN_COLUMNS))})", rows)
        return
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    frame["sketch_n"] = frame["sketch_n"].astype("Int64")  # nullable: a failed run has no sketch
    connection.register("new_runs", frame)
    try:
        columns = ", ".join("CAST(sketch_q AS BLOB)" if c == "sketch_q" else c for c in RUN_COLUMNS)
        connection.execute(f"INSERT INTO runs SELECT {columns} FROM new_runs")
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
    warnings: list[str] = field(default_factory=list)  # an index not believed or damaged, and remade


def records(paths: list[Path], now: datetime.datetime | None = None) -> Records:
    """Every run under the folders `paths`, from their indexes (updated first), merged by run id: the same run in
    two folders counts once; two different files claiming one run id are both reported and neither used."""
    import duckdb

    now = now or datetime.datetime.now(datetime.timezone.utc)
    by_id: dict[str, list] = {}
    problems: list[str] = []
    notes: list[str] = []
    warnings: list[str] = []
    for folder in map(Path, paths):
        if not folder.is_dir():
            raise IndexUnusable(f"{folder} is not a folder: the index covers folders of results")
        for rebuild in (False, True):
            try:
                with _opened(folder, rebuild) as (connection, key, report):
                    report = _update(connection, key, folder, report)
                    raw = _fetch_rows(connection)
                # decoded once DuckDB has let go of its buffers (at 100,000 runs: hundreds of MiB)
                found, reasons = _read_rows(raw, key, folder)
            except (duckdb.Error, _Damaged) as exc:
                raw = ([], [])  # (what was read is let go before the index is remade)
                if rebuild:
                    raise IndexUnusable(f"cannot use the results index {index_path(folder)}: {_short(exc)}") from None
                warnings.append(f"the results index {index_path(folder)} is damaged ({_short(exc)}): remade from "
                                "the result files")
                continue
            notes += report.notes
            warnings += report.warnings
            problems += report.skipped + reasons
            for record in found:
                by_id.setdefault(record.row["run_id"], []).append(record)
            break
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
    return Records(runs, problems, notes, warnings)


def _fetch_rows(connection) -> tuple[list, list]:
    return (connection.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs ORDER BY path").fetchall(),
            connection.execute(f"SELECT {', '.join(PROBLEM_COLUMNS)} FROM problems ORDER BY path").fetchall())


def _read_rows(raw: tuple[list, list], key: bytes, folder: Path) -> tuple[list, list[str]]:
    """(runs, problem lines) of the index's rows, each checked against its MAC and its shape; _Damaged at the first
    row edgebench did not write as it is."""
    import numpy as np

    from .report import RunRecord

    prefix = os.path.join(str(folder), "")
    loads = _json_reader()
    runs = []
    rows, problem_rows = raw
    for fields in rows:
        if fields[-1] != _row_mac(key, fields[:-1]):
            raise _Damaged(f"the row of {str(fields[0])[:100]!r} is not one edgebench wrote")
        path, sha, row_json = fields[0], fields[4], fields[8]
        n, total, sumsq, q = fields[9:13]
        try:
            summary = loads(row_json)
            row, facts = summary["row"], summary["facts"]
            if not (isinstance(row, dict) and isinstance(facts, dict) and isinstance(row.get("run_id"), str)):
                raise TypeError("not a row")
            sketch = {"n": n, "sum": total, "sumsq": sumsq, "q": np.frombuffer(q, dtype=np.float64)} if q else None
        except (ValueError, TypeError, KeyError) as exc:  # (orjson's decode error is a ValueError)
            raise _Damaged(f"the row of {path[:100]!r} cannot be read: {_short(exc)}") from None
        runs.append(RunRecord(row, facts, sketch, prefix + path, sha))
    problems = []
    for path, size, mtime, ctime, reason, mac in problem_rows:
        if mac != _mac(key, path, size, mtime, ctime, reason):
            raise _Damaged(f"the problem noted for {str(path)[:100]!r} is not one edgebench wrote")
        problems.append(reason)
    return runs, problems
