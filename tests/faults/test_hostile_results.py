"""A results folder from elsewhere is data: its index, its names and its figures are checked, never trusted.

A folder of results arrives as a tarball, a CI artefact or a checkout; everything under it, `.edgebench/` (the
results index) included, may have been made to attack whoever reads it. The promise tested here: nothing in it
makes edgebench write outside the folders the user named, print a traceback or show a forged figure; what it
refuses is one line, and the JSON files stay the truth.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import EXAMPLES, assert_one_line_error
from tests.synthetic import lognormal_ns, result, write

MATH = "$\\frac{a}{$"  # what matplotlib's mathtext cannot parse: an unknown command, unbalanced braces


def _folder(path: Path, medians=(5.0, 6.0, 7.0)) -> Path:
    rng = np.random.default_rng(0)
    documents = []
    for index, median in enumerate(medians):
        document = result(lognormal_ns(rng, median, 200), run_id=f"run-{index}", model=f"m{index}", top1=90.0 + index)
        document["created_at"] = f"2026-10-{index + 1:02d}T03:00:00+00:00"
        documents.append(document)
    write(path, documents)
    return path


def _figures(done) -> dict:
    assert done.code == 0, done.stderr
    assert "Traceback" not in done.stderr
    return {row["model"]: (row["runs"], row["p50_ms"]) for row in json.loads(done.stdout)}


def _truth(bench, folder: Path) -> dict:
    """The figures from the JSON files alone (read in process, no index involved)."""
    from edgebench.stages.compare import CompareRequest, compare
    from edgebench.results.report import render

    found = compare(CompareRequest(paths=[folder], use_index=False))
    return {row["model"]: (row["runs"], row["p50_ms"]) for row in json.loads(render(found.comparison, "json"))}


def _tree(folder: Path) -> dict:
    """Every entry under folder (links not followed): kind and content hash, to see that nothing changed there."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            if path.is_symlink():
                found[str(path)] = ("link", os.readlink(path))
            elif path.is_file():
                found[str(path)] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
            else:
                found[str(path)] = ("other", None)
    return found


# ------------------------------------------------------------------------------- the index's own files
def _link_index(folder: Path, outside: Path) -> None:
    (folder / ".edgebench").mkdir()
    os.symlink(outside / "index.duckdb", folder / ".edgebench" / "index.duckdb")


def _link_existing_index(folder: Path, outside: Path) -> None:
    (outside / "index.duckdb").write_bytes(b"somebody's file")
    _link_index(folder, outside)


def _link_index_folder(folder: Path, outside: Path) -> None:
    os.symlink(outside, folder / ".edgebench")


def _link_wal(folder: Path, outside: Path) -> None:
    (folder / ".edgebench").mkdir()
    os.symlink(outside / "index.duckdb.wal", folder / ".edgebench" / "index.duckdb.wal")


def _hard_link_index(folder: Path, outside: Path) -> None:
    (outside / "index.duckdb").write_bytes(b"somebody's file")
    (folder / ".edgebench").mkdir()
    os.link(outside / "index.duckdb", folder / ".edgebench" / "index.duckdb")


def _fifo_index(folder: Path, outside: Path) -> None:
    (folder / ".edgebench").mkdir()
    os.mkfifo(folder / ".edgebench" / "index.duckdb")


def _folder_as_wal(folder: Path, outside: Path) -> None:
    (folder / ".edgebench" / "index.duckdb.wal").mkdir(parents=True)


def _link_spill_folder(folder: Path, outside: Path) -> None:
    (folder / ".edgebench").mkdir()
    os.symlink(outside, folder / ".edgebench" / "index.duckdb.tmp")


UNSAFE = {"a link as the index (dangling)": (_link_index, "is a symbolic link"),
          "a link as the index (to a file)": (_link_existing_index, "is a symbolic link"),
          "a link as the index folder": (_link_index_folder, "is a symbolic link"),
          "a link as the write-ahead log": (_link_wal, "is a symbolic link"),
          "a hard link as the index": (_hard_link_index, "has other hard links"),
          "a FIFO as the index": (_fifo_index, "is not a regular file"),
          "a folder as the write-ahead log": (_folder_as_wal, "is not a regular file"),
          "a link as DuckDB's spill folder": (_link_spill_folder, "is not a folder of this user's")}


@pytest.mark.bad_input
@pytest.mark.parametrize("case", list(UNSAFE))
def test_an_unsafe_index_is_ignored_and_nothing_outside_is_written(bench, tmp_path, case):
    make, said = UNSAFE[case]
    folder, outside = _folder(tmp_path / "results"), tmp_path / "outside"
    outside.mkdir()
    make(folder, outside)
    before = _tree(outside)
    truth = _truth(bench, folder)
    for command in (("compare", folder, "--format", "json"), ("history", folder, "--format", "json")):
        done = bench(*command)
        assert done.code == 0 and "Traceback" not in done.stderr, done.stderr
        warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1 and said in warnings[0] and "reading the result files instead" in warnings[0], done.stderr
    assert _figures(bench("compare", folder, "--format", "json")) == truth
    for rebuild in ((), ("--rebuild",)):  # `bench index` is asked for the index itself: it refuses, and says what to do
        assert_one_line_error(bench("index", folder, *rebuild), said, "delete")
    assert _tree(outside) == before  # no file created, changed or removed where the links point


# ------------------------------------------------------------------------------- what the index holds
def _duckdb(folder: Path, *statements: str, reseal: bool = False) -> None:
    """Change the index in place. reseal: seal it again with this user's key, as only edgebench can, to reach the
    second line of defence (the rows' MACs and shapes) behind the seal."""
    import duckdb

    with duckdb.connect(str(folder / ".edgebench" / "index.duckdb")) as connection:
        for statement in statements:
            connection.execute(statement)
    if reseal:
        from edgebench.results.index import _key, _write_seal

        _write_seal(folder / ".edgebench", _key())


FORGED_P50 = "UPDATE runs SET row_json = replace(row_json, '\"p50_ms\": ', '\"p50_ms\": 0.000')"
CRAFTED = {
    "a version that is no number": ("UPDATE meta SET value = 'three' WHERE key = 'version'",),
    "a view instead of the runs table": ("DROP TABLE runs", "CREATE VIEW runs AS SELECT * FROM problems"),
    "rows whose JSON does not parse": ("UPDATE runs SET row_json = '{not json'",),
    "rows whose types are wrong": ("UPDATE runs SET row_json = '{\"row\": [1], \"facts\": 7}'",),
    "a sketch that is no array": ("UPDATE runs SET sketch_q = '\\x01\\x02\\x03'::BLOB",),
    "forged figures for real files": (FORGED_P50,),
    "a runs table of other columns": ("DROP TABLE runs", "CREATE TABLE runs (path VARCHAR)"),
    "a forged problem hiding a good file": ("INSERT INTO problems SELECT path, size, mtime_ns, ctime_ns, 'fine', 'x' "
                                            "FROM runs WHERE path = 'run-0.json'", "DELETE FROM runs WHERE path = 'run-0.json'"),
}


@pytest.mark.bad_input
@pytest.mark.parametrize("case", list(CRAFTED))
def test_an_index_changed_in_place_is_remade_from_the_files(bench, tmp_path, case):
    """Changed by anything but edgebench, the index's change time no longer matches its seal: it is remade unopened.
    Sealed again (as only edgebench can), the rows' MACs and shapes still find the change: damage, remade."""
    folder = _folder(tmp_path / "results")
    truth = _truth(bench, folder)
    assert bench("index", folder).code == 0
    _duckdb(folder, *CRAFTED[case])
    done = bench("compare", folder, "--format", "json")
    assert _figures(done) == truth
    assert done.stderr.count("warning:") == 1 and "was not made here" in done.stderr
    _duckdb(folder, *CRAFTED[case], reseal=True)
    done = bench("compare", folder, "--format", "json")
    assert _figures(done) == truth
    assert done.stderr.count("warning:") == 1 and "is damaged" in done.stderr and "remade from the result files" in done.stderr
    assert _figures(bench("compare", folder, "--format", "json")) == truth  # remade once: no warning left
    history = bench("history", folder, "--format", "json")
    assert history.code == 0 and "Traceback" not in history.stderr and "warning" not in history.stderr


@pytest.mark.bad_input
def test_an_index_that_came_with_the_results_is_not_believed(bench, tmp_path):
    """A colleague's folder, index included, with forged figures in the index: the seal (device and inode of the
    index under this user's key) does not match, so the index is never opened, and the files are read."""
    theirs = _folder(tmp_path / "theirs")
    assert bench("index", theirs).code == 0
    _duckdb(theirs, FORGED_P50)
    received = tmp_path / "received"
    shutil.copytree(theirs, received)  # what unpacking a tarball gives: new files, new inodes
    done = bench("compare", received, "--format", "json")
    assert _figures(done) == _truth(bench, received)
    assert "was not made here by this user's edgebench" in done.stderr and "remade from the result files" in done.stderr
    again = bench("compare", received, "--format", "json")
    assert "warning" not in again.stderr  # the new index is this user's


@pytest.mark.bad_input
def test_a_file_replaced_with_the_same_size_and_time_is_read_again(bench, tmp_path):
    """Rows are matched to files by size, modification AND change time: a file swapped in with the old size and
    mtime (touch -d) still has a new ctime, so its row is re-read, and only a changed content counts as a change."""
    folder = _folder(tmp_path / "results")
    assert bench("index", folder).code == 0
    path = folder / "run-1.json"
    document = json.loads(path.read_text())
    stat = path.stat()
    samples = document["measurements"]["repeats"][0]["samples_ns"]
    document["measurements"]["repeats"][0]["samples_ns"] = [s * 2 for s in samples]
    text = json.dumps(document, separators=(",", ":"))
    text = text + " " * (stat.st_size - len(text))  # the same size (compact JSON, padded)
    assert len(text) == stat.st_size
    path.write_text(text)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the same modification time
    done = bench("compare", folder, "--format", "json")
    assert _figures(done) == _truth(bench, folder)
    os.chmod(path, 0o600)  # a new change time, the same bytes: read, but no change to report
    assert "changed" not in bench("index", folder).stderr


# ------------------------------------------------------------------------------- poisoned result files
def _rich(run_id: str, name: str = "net", target: str = "board-a") -> dict:
    """A result with every block a report draws: accuracy with labels, a profile, a server scenario with probes,
    pipeline stages and agreement, energy, a variant."""
    rng = np.random.default_rng(len(run_id))
    document = result(lognormal_ns(rng, 5.0, 300), run_id=run_id, model=name, target=target, top1=91.0)
    document["profile"] = {"iterations": 10, "top_operators": [{"op_type": "Conv", "total_us": 100.0, "pct": 60.0}]}
    document["pipeline"] = {"file": "p.py", "samples": 10, "results": {"samples": 10, "agree": 9, "agree_pct": 90.0,
                                                                       "passed": True, "max_abs": 0.1}}
    document["settings"]["pipeline"] = {"file": "p.py", "sha256": "ab" * 32, "samples": "s"}
    repeat = document["measurements"]["repeats"][0]
    repeat["stages_ns"] = {stage: [1000] * 300 for stage in ("load", "preprocess", "inference", "postprocess")}
    repeat["scenario"] = {"name": "server", "qps": 100.0, "achieved_qps": 99.0, "issue_delays_ns": [1000, 2000],
                          "latency_bound_s": 0.01, "probes": [{"qps": 50.0, "p99_ns": 1e6, "met": True}]}
    document["settings"]["scenario"] = {"name": "server", "qps": 100.0, "latency_bound_s": 0.01}
    document["energy"] = {"available": True, "source": "meter", "scope": "board", "mj_per_inference": 1.0,
                          "mj_per_inference_above_idle": 0.5, "average_power_w": 2.0, "idle_power_w": 1.0,
                          "inferences_per_joule": 1000.0, "rate_hz": 100.0, "mj_per_inference_ci": [0.9, 1.1]}
    document["model"]["provenance"] = {"variant": "int8", "parent": {"name": name}}
    return document


def _walk(value, path=()):
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:1]):
            yield from _walk(item, (*path, index))


GONE = object()
POISONS = [GONE, None, "x", MATH, -1, 10**400, True, [None], {"a": None}]


def _poisoned(document: dict, path: tuple, value) -> dict:
    changed = json.loads(json.dumps(document))  # a deep copy (a result is JSON), several times faster than deepcopy
    holder = changed
    for key in path[:-1]:
        holder = holder[key]
    if value is GONE:
        del holder[path[-1]]
    else:
        holder[path[-1]] = value
    return changed


@pytest.mark.bad_input
def test_every_field_poisoned_is_refused_or_reported_never_a_traceback(tmp_path):
    """Each field of a rich result, removed or replaced by a value of every wrong kind: reading it refuses it
    (one reason), or every report over it (tables in each format, per run, a baseline, the index's row) works.
    About 1,500 documents, in process; history over poisoned files is the next test's."""
    from edgebench.results import report
    from edgebench.errors import ResultError
    from edgebench.results.index import _summarize
    from edgebench.results.files import load_result

    base, other = _rich("base"), _rich("other", target="board-b")
    path = tmp_path / "poisoned.json"
    tried = refused = 0
    for where in [p for p in _walk(base) if p]:
        for value in POISONS:
            path.write_text(json.dumps(_poisoned(base, where, value)))
            tried += 1
            try:
                document = load_result(path)
            except ResultError as exc:
                assert "poisoned.json" in str(exc)
                refused += 1
                continue
            try:
                comparison = report.compare_runs([document, other, base])
                for fmt in ("table", "json"):
                    report.render(comparison, fmt, None)
                report.render(comparison, "csv", [document, other])
                report.render(report.compare_runs([document, other], baseline=("target", "board-a")), "table", None)
                _summarize(path)
            except Exception as exc:  # the test's point: name the field and the value that got through
                raise AssertionError(f"{where} = {str(value)[:30]!r}: {type(exc).__name__}: {exc}") from exc
    assert tried > 1200 and 0 < refused < tried


POISONED_FILES = {
    "labels without the board's": lambda d: d["accuracy"].__setitem__("labels", {"reference": {"top1_pct": 1.0}}),
    "a provider that is null": lambda d: d["settings"].__setitem__("provider", None),
    "accuracy without outputs": lambda d: d["accuracy"].pop("outputs"),
    "an integer of 400 digits": lambda d: d["measurements"]["repeats"][0].__setitem__("session_create_ns", 10**400),
    "an offline run of no time": lambda d: d["measurements"]["repeats"][0].__setitem__(
        "scenario", {"name": "offline", "samples": 10, "wall_ns": 0}),
    "samples that are all zero": lambda d: d["measurements"]["repeats"][0].__setitem__("samples_ns", [0] * 50),
    "escape sequences in the settings": lambda d: d["settings"].update(
        provider="\x1b]0;OWNED\x07", graph_optimization_level="\x1b[2J", dims={"\x1b[31mb": 1}),
    "more samples than a run keeps": lambda d: d["measurements"]["repeats"][0].__setitem__("samples_ns", [1] * 5_000_001),
    "probes at the edge of a float": lambda d: d["measurements"]["repeats"][0]["scenario"].__setitem__(
        "probes", [{"qps": 1e308, "p99_ns": 1e308, "met": True}, {"qps": 1e-300, "p99_ns": 0.0, "met": False}]),
    "a cell of a plan that is no text": lambda d: d.__setitem__("plan", {"name": "p", "cell": [1]}),
}


@pytest.mark.bad_input
def test_poisoned_result_files_never_stop_compare_or_history(bench, tmp_path):
    """One folder holding a poisoned file of each kind beside two good ones: every report command works, names
    each refused file, never prints an escape sequence, and never loses a good run."""
    folder = tmp_path / "results"
    good = [_rich("good-1"), _rich("good-2", target="board-b")]
    poisoned = []
    for index, poison in enumerate(POISONED_FILES.values()):
        bad = _rich(f"bad-{index}")
        poison(bad)
        poisoned.append(bad)
    write(folder, [*good, *poisoned])
    for command in (("compare", folder), ("compare", folder, "--per-run", "-f", "json"),
                    ("compare", folder, "-f", "html", "-o", tmp_path / "r.html"), ("history", folder),
                    ("history", folder, "-f", "html", "-o", tmp_path / "h.html"), ("index", folder)):
        done = bench(*command)
        assert done.code == 0, (command, done.stderr)
        assert "Traceback" not in done.stderr + done.stdout and "\x1b" not in done.stdout + done.stderr, (command, done.stderr)
        if command[1:3] == (folder, "--per-run"):
            shown = {row["run_id"] for row in json.loads(done.stdout)}
            assert {"good-1", "good-2"} <= shown  # the good runs are never lost to a bad one
            refused = {f"bad-{i}" for i in range(len(POISONED_FILES))} - shown
            for kept in shown - {"good-1", "good-2"}:  # what is shown was made safe: no escape sequence above
                assert kept.startswith("bad-")
            assert {"bad-0", "bad-3", "bad-7", "bad-9"} <= refused  # no board labels, 400 digits, 5M+1 samples, a list as cell


# ------------------------------------------------------------------------------- plots: names are plain text
@pytest.mark.bad_input
def test_tex_in_names_is_drawn_as_text_in_every_plot(bench, tmp_path):
    """Model, variant, target, operator, energy scope and created_at holding `$...$`: every plot of both HTML
    reports is drawn (matplotlib parses no mathtext), and the page holds each plot."""
    folder = tmp_path / "results"
    documents = []
    for index in range(6):
        document = _rich(f"run-{index}", name=f"{MATH}net", target=f"{MATH}board{index % 2}")
        document["model"]["provenance"]["variant"] = f"int8{MATH}"
        document["profile"]["top_operators"][0]["op_type"] = f"Conv{MATH}"
        document["energy"]["scope"] = f"board{MATH}"
        document["created_at"] = f"2026-10-0{index + 1}T03:00:00+00:00"
        documents.append(document)
    offline = _rich("offline", name=f"{MATH}off")
    offline["settings"]["scenario"] = {"name": "offline"}
    offline["measurements"]["repeats"][0]["scenario"] = {"name": "offline", "samples": 300, "wall_ns": 3_000_000}
    documents.append(offline)
    write(folder, documents)
    page = tmp_path / "report.html"
    done = bench("compare", folder, "-f", "html", "-o", page)
    assert done.code == 0, done.stderr
    text = page.read_text()
    for heading in ("Latency", "Speed and accuracy", "Latency under load", "Throughput", "End to end", "Energy",
                    "Where the time goes"):
        assert f"<h2>{heading}</h2><img" in text, heading
    assert "plot left out" not in text
    trend = tmp_path / "history.html"
    done = bench("history", folder, "-f", "html", "-o", trend, "--window", "2")
    assert done.code == 0, done.stderr
    assert trend.read_text().count("<img") >= 2 and "plot left out" not in trend.read_text()


# ------------------------------------------------------------------------------- every command over one hostile folder
def _hostile_folder(tmp_path: Path) -> tuple[Path, Path]:
    """A results folder made of everything at once: links in and out, a FIFO, a socket-like dangling link, crafted
    index files, poisoned and oversized results, names with escape sequences and TeX; and a folder beside it that
    nothing may touch."""
    folder, outside = tmp_path / "results", tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text(json.dumps(result([5_000_000] * 10, run_id="secret")))
    good = [_rich("good-1", name=f"\x1b]0;t\x07{MATH}"), _rich("good-2", target="board-b")]
    bad = _rich("bad")
    bad["accuracy"]["labels"] = {}
    write(folder, [*good, bad])
    (folder / "sub").mkdir()
    os.symlink(outside / "secret.json", folder / "sub" / "leak.json")
    os.symlink(outside, folder / "linked-folder")
    os.symlink(folder / "good-1.json", folder / "sub" / "alias.json")  # a link that stays inside: the same run, once
    os.mkfifo(folder / "fifo.json")
    os.symlink(outside / "missing.json", folder / "dangling.json")
    (folder / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (folder / ".edgebench").mkdir()
    (folder / ".edgebench" / "index.duckdb").write_bytes(b"DUCK" * 1000)  # not this user's index: never opened
    (folder / ".edgebench" / "index.seal").write_text("forged\n")
    os.symlink(outside / "wal", folder / ".edgebench" / "index.duckdb.wal")
    return folder, outside


@pytest.mark.bad_input
def test_every_command_over_a_hostile_results_folder(bench, tmp_path):
    folder, outside = _hostile_folder(tmp_path)
    before_outside = _tree(outside)
    results_before = {p: h for p, h in _tree(folder).items() if "/.edgebench" not in p}
    plan = tmp_path / "plan.yaml"
    shutil.copy(EXAMPLES / "cnn.onnx", tmp_path / "model.onnx")
    plan.write_text("name: p\nmodels:\n  - name: m\n    path: model.onnx\ntargets: [local]\n")
    reports = tmp_path / "reports"
    commands = [("compare", folder), ("compare", folder, "--per-run"), ("compare", folder, "--by", "model,target,opt,dims"),
                ("compare", folder, "--baseline", "target=board-a"),
                *[("compare", folder, "-f", fmt, "-o", reports / f"r.{fmt}") for fmt in ("csv", "md", "json", "html", "parquet")],
                ("history", folder), ("history", folder, "-f", "json"), ("history", folder, "-f", "html", "-o", reports / "h.html"),
                ("index", folder), ("index", folder, "--rebuild"), ("import", folder / "bad.json", "--results", folder),
                ("run", plan, "--results", folder, "--dry-run")]
    for command in commands:
        done = bench(*command, timeout=120)
        assert "Traceback" not in done.stdout + done.stderr, (command, done.stderr)
        assert "\x1b" not in done.stdout + done.stderr, command
        assert done.code in (0, 1, 2), (command, done.code, done.stderr)
        if done.code:
            assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error: "), (command, done.stderr)
    runs = json.loads(bench("compare", folder, "--per-run", "-f", "json").stdout)
    assert sorted(r["run_id"] for r in runs) == ["good-1", "good-2"]  # no secret, no bad run, the alias once
    assert _tree(outside) == before_outside  # nothing written where a link points
    after = {p: h for p, h in _tree(folder).items() if "/.edgebench" not in p}
    assert after == results_before  # nothing stored is lost or changed
    assert {p.name for p in reports.iterdir()} == {"r.csv", "r.md", "r.json", "r.html", "r.parquet", "h.html"}


# ------------------------------------------------------------------------------- what a user names
@pytest.mark.bad_input
def test_an_output_that_is_no_file_is_refused(bench, tmp_path):
    folder = _folder(tmp_path / "results")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert_one_line_error(bench("compare", folder, "-f", "csv", "-o", fifo), "is a device, FIFO or socket, not a file")
    assert fifo.is_fifo()


@pytest.mark.bad_input
@pytest.mark.parametrize("where", ["/tmp/elsewhere", "../elsewhere", "sub/../../elsewhere", "link"])
def test_a_plans_results_folder_stays_in_the_plans_folder(bench, tmp_path, where):
    folder = tmp_path / "plans"
    folder.mkdir()
    os.symlink(tmp_path, folder / "link")
    plan = folder / "plan.yaml"
    shutil.copy(EXAMPLES / "cnn.onnx", folder / "m.onnx")
    plan.write_text(f"name: p\nmodels:\n  - name: m\n    path: m.onnx\ntargets: [local]\nresults: {where}\n")
    done = bench("run", plan, "--dry-run")
    assert_one_line_error(done, "plan.yaml", "results", "give --results to write elsewhere")
    assert not (tmp_path / "elsewhere").exists()


def test_a_run_never_keeps_more_samples_than_a_report_reads():
    """The reports refuse a repeat of more than 5,000,000 samples (a folder of files just under the size limit must
    not make them hold gigabytes), so a run never makes more: a larger count asked for ("let the time decide") is
    capped, on every front (the CLI, plans and the standalone agent all go through this one check)."""
    from edgebench.agentlib import MAX_SAMPLES, normalize_run_request

    request = normalize_run_request({"model": "m.onnx", "min_iterations": 10**9, "max_iterations": 10**9})
    assert request["min_iterations"] == request["max_iterations"] == MAX_SAMPLES == 5_000_000


@pytest.mark.bad_input
def test_an_index_overwritten_in_place_is_never_opened(bench, tmp_path):
    """tar extracting over an index keeps its inode: the seal also holds the file's size and times (its change
    time no one can set), so a crafted database written into the old file is deleted unopened, and the SQL of its
    views (here: one that reads a file it should not) never runs."""
    import duckdb

    folder = _folder(tmp_path / "results")
    assert bench("index", folder).code == 0
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-TOKEN-abcdefg")
    crafted = tmp_path / "crafted.duckdb"
    with duckdb.connect(str(crafted)) as connection:
        connection.execute(f"CREATE VIEW meta AS SELECT 'version' AS key, content AS value FROM read_text('{secret}')")
    database = folder / ".edgebench" / "index.duckdb"
    inode = database.stat().st_ino
    with open(database, "r+b") as handle:  # in place, as tar or cp over an existing file write
        handle.truncate(0)
        handle.write(crafted.read_bytes())
    assert database.stat().st_ino == inode
    done = bench("compare", folder, "--format", "json")
    assert _figures(done) == _truth(bench, folder)
    assert "SECRET" not in done.stdout + done.stderr and "was not made here" in done.stderr


@pytest.mark.bad_input
def test_text_that_is_no_utf8_is_refused_by_name(bench, tmp_path):
    """JSON may hold a lone surrogate ("\\ud800"), which no terminal, CSV writer or DuckDB column takes: such a file
    is refused with one line naming it; a file whose name is not UTF-8 is skipped, named."""
    folder = _folder(tmp_path / "results")
    for field, name in (("model", "bad-model"), ("run_id", "bad-run"), ("created_at", "bad-time")):
        document = result([5_000_000] * 20, run_id=name)
        if field == "model":
            document["model"]["name"] = "\ud800m"
        else:
            document[field] = "\ud800x"
        (folder / f"{name}.json").write_text(json.dumps(document))
    os.close(os.open(os.path.join(os.fsencode(folder), b"\xff\xfe.json"), os.O_CREAT | os.O_WRONLY))
    for command in (("compare", folder), ("compare", folder, "--per-run", "-f", "json"), ("history", folder),
                    ("compare", folder, "-f", "html", "-o", tmp_path / "r.html"), ("index", folder)):
        done = bench(*command)
        assert done.code == 0 and "Traceback" not in done.stderr, (command, done.stderr)
    done = bench("compare", folder, "--per-run", "-f", "json")
    assert {row["run_id"] for row in json.loads(done.stdout)} == {"run-0", "run-1", "run-2"}
    for name in ("bad-model.json", "bad-run.json", "bad-time.json", "\\xff\\xfe.json: a name that is not UTF-8"):
        assert name in done.stderr, name
    assert "warning" not in bench("compare", folder).stderr.replace("warning: skipped", "")  # the index is used


@pytest.mark.bad_input
@pytest.mark.parametrize("since", ["1000000d", "99999999999d", "\u00b2d", "yesterday"])
def test_a_since_that_is_no_time_is_one_line(bench, tmp_path, since):
    folder = _folder(tmp_path / "results")
    assert_one_line_error(bench("history", folder, "--since", since), "--since")


@pytest.mark.bad_input
def test_a_folder_others_may_change_keeps_no_index(bench, tmp_path):
    """Whoever else may write the results folder could swap `.edgebench` for a link between a check and a write:
    the index is not used there (one warning), the files are read."""
    folder = _folder(tmp_path / "results")
    folder.chmod(0o777)
    done = bench("compare", folder, "--format", "json")
    assert _figures(done) == _truth(bench, folder)
    assert "may be changed by another user" in done.stderr and not (folder / ".edgebench").exists()
