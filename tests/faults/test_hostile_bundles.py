"""Model bundles from elsewhere (a tar of a runtime's files plus edgebench-model.json) are hostile: a lying or
malformed manifest, a tar that would inflate, write twice or outside its folder, a stale unpacking. Each is one
clear line and exit 2 before anything is stored, on the host and for the agent on its own (kind `model`), and
nothing is ever unpacked beside the user's file."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, assert_one_line_error

pytestmark = pytest.mark.bad_input

QUICK = ["--warmup", "1", "--min-iterations", "3", "--min-seconds", "0.05", "--max-seconds", "5"]


@pytest.fixture(scope="module")
def ncnn_parts(tmp_path_factory) -> dict:
    """The files of a real ncnn bundle of the digits model: name -> bytes."""
    from edgebench.stages.convert import convert

    folder = tmp_path_factory.mktemp("ncnn-bundle")
    (variant,) = convert(EXAMPLES / "digits.onnx", ["ncnn"], folder)
    assert variant.ok, variant.error
    with tarfile.open(variant.path) as archive:
        return {m.name: archive.extractfile(m).read() for m in archive}


def _tar(path: Path, members: list[tuple[str, bytes]], **kinds) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, kind in kinds.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "/etc/passwd"
            archive.addfile(info)
    return path


def _bundle(tmp_path: Path, parts: dict, name: str = "evil.ncnn.tar", **manifest_changes) -> Path:
    manifest = json.loads(parts["edgebench-model.json"])
    for key, value in manifest_changes.items():
        if value is _DROP:
            manifest.pop(key)
        elif callable(value):
            value(manifest[key])
        else:
            manifest[key] = value
    members = [(n, d) for n, d in parts.items() if n != "edgebench-model.json"]
    return _tar(tmp_path / name, members + [("edgebench-model.json", json.dumps(manifest).encode())])


_DROP = object()


def _set(path: str, value):
    """A change inside a part of the manifest: ('0.shape', value) under "inputs"."""
    def change(part):
        *parents, last = path.split(".")
        node = part
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value
    return change


MANIFEST_LIES = {
    "version-as-text": ({"bundle_version": "2"}, "bundle_version"),
    "version-huge": ({"bundle_version": 10 ** 400}, "upgrade it"),
    "runtime-onnxruntime": ({"runtime": "onnxruntime"}, "a bundle is for one of"),
    "runtime-escape": ({"runtime": "x\n\x1b[31mred"}, "names runtime"),
    "no-param-role": ({"files": {"bin": "model.ncnn.bin"}}, "names no param file"),
    "file-outside": ({"files": {"param": "../model.ncnn.param", "bin": "model.ncnn.bin"}}, "plain file names"),
    "dtype-list": ({"inputs": _set("0.dtype", ["float32"])}, "dtype"),
    "dtype-int64": ({"inputs": _set("0.dtype", "int64")}, "float32 only"),
    "blob-null": ({"outputs": _set("0.blob", None)}, "blob"),
    "shape-negative": ({"inputs": _set("0.shape", [1, 1, -8, 8])}, "positive sizes"),
    "shape-bool": ({"inputs": _set("0.shape", [True, 1, 8, 8])}, "positive sizes"),
    "shape-empty": ({"inputs": _set("0.shape", [])}, "must start with 1"),
    "output-shape-lies": ({"outputs": _set("0.shape", [1, 7])}, "but the manifest says"),
    "no-outputs": ({"outputs": []}, "lists no outputs"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_LIES))
def test_a_manifest_that_lies_or_is_malformed_is_refused(bench, tmp_path, ncnn_parts, case):
    changes, fragment = MANIFEST_LIES[case]
    bundle = _bundle(tmp_path, ncnn_parts, **changes)
    done = bench("deploy", bundle, "--runtime", "ncnn", "--results", tmp_path / "r", *QUICK)
    assert_one_line_error(done, fragment)
    assert done.code == 2 and not (tmp_path / "r").exists()
    assert "\x1b" not in done.stderr
    assert not list(tmp_path.glob("*.tar.d*")), "unpacked beside the user's file"


def test_the_agent_on_its_own_refuses_a_lying_manifest_as_a_model_error(tmp_path, ncnn_parts):
    """No segfault, no `internal` bug: the board's own check, kind `model`, exit 2."""
    for case in ("dtype-int64", "blob-null", "output-shape-lies", "version-as-text"):
        bundle = _bundle(tmp_path, ncnn_parts, name=f"{case}.ncnn.tar", **MANIFEST_LIES[case][0])
        done = subprocess.run([sys.executable, "-m", "edgebench_agent", "run", str(bundle), "--runtime", "ncnn", "--json",
                               "--min-seconds", "0.05"], capture_output=True, text=True, timeout=120,
                              env={**__import__("os").environ, "EDGEBENCH_BUNDLE_CACHE": str(tmp_path / "cache")})
        assert done.returncode == 2, (case, done.returncode, done.stderr[-500:])
        assert json.loads(done.stdout)["error"]["kind"] == "model", case


@pytest.mark.parametrize("case", ["duplicate-manifest", "duplicate-param", "symlink", "hardlink", "sparse", "too-many",
                                  "control-character", "not-a-tar", "manifest-nan", "manifest-deep"])
def test_a_hostile_archive_is_refused(bench, tmp_path, ncnn_parts, case):
    members = list(ncnn_parts.items())
    kinds = {}
    if case == "duplicate-manifest":  # the host would read one, the board the other
        liar = json.loads(ncnn_parts["edgebench-model.json"])
        liar["inputs"][0]["name"] = "liar"
        members.append(("edgebench-model.json", json.dumps(liar).encode()))
    elif case == "duplicate-param":
        members.insert(0, ("model.ncnn.param", b"7767517\n0 0\n"))
    elif case == "symlink":
        kinds["link"] = tarfile.SYMTYPE
    elif case == "hardlink":
        kinds["link"] = tarfile.LNKTYPE
    elif case == "too-many":
        members += [(f"extra{i}", b"x") for i in range(20)]
    elif case == "control-character":
        members.append(("a\nb", b"x"))
    elif case == "manifest-nan":
        members = [(n, d.replace(b'"bundle_version": 1', b'"bundle_version": NaN') if n == "edgebench-model.json" else d)
                   for n, d in members]
    elif case == "manifest-deep":
        members = [(n, b"[" * 100000 if n == "edgebench-model.json" else d) for n, d in members]
    path = tmp_path / "evil.ncnn.tar"
    if case == "not-a-tar":
        path.write_bytes(b"not a tar at all" * 100)
    elif case == "sparse":  # a GNU sparse member: a 50 KiB archive that would write a GiB
        files = tmp_path / "files"
        files.mkdir()
        for name, data in members:
            (files / name).write_bytes(data)
        with open(files / "hole", "wb") as handle:
            handle.truncate(1 << 30)
        subprocess.run(["tar", "--format=gnu", "--sparse", "-cf", str(path), "-C", str(files), *ncnn_parts, "hole"],
                       check=True)
        assert path.stat().st_size < 1 << 20
    else:
        _tar(path, members, **kinds)
    done = bench("deploy", path, "--runtime", "ncnn", "--results", tmp_path / "r", *QUICK)
    assert_one_line_error(done)
    assert done.code == 2 and not (tmp_path / "r").exists()
    assert not list(tmp_path.glob("*.tar.d*"))


def test_a_changed_bundle_is_never_served_by_an_old_unpacking(bench, tmp_path, ncnn_parts):
    """Unpacked by content: after the file changes, the new bytes are what runs (here: refused, as they should be)."""
    bundle = _bundle(tmp_path, ncnn_parts, name="b.ncnn.tar")
    assert bench("deploy", bundle, "--results", tmp_path / "r", *QUICK).code == 0
    truncated = dict(ncnn_parts, **{"model.ncnn.bin": ncnn_parts["model.ncnn.bin"][:100]})
    _bundle(tmp_path, truncated, name="b.ncnn.tar")
    done = bench("deploy", bundle, "--results", tmp_path / "r2", *QUICK)
    assert_one_line_error(done, "weights")
    assert not (tmp_path / "r2").exists() and not list(tmp_path.glob("*.tar.d*"))


@pytest.mark.parametrize("command", [["inspect"], ["validate"], ["convert", "--to", "fp16"]])
def test_onnx_only_commands_name_a_bundle_for_what_it_is(bench, tmp_path, ncnn_parts, command):
    bundle = _bundle(tmp_path, ncnn_parts)
    done = bench(command[0], bundle, *command[1:])
    assert_one_line_error(done, "a model for another runtime, not an ONNX model")


@pytest.mark.parametrize("value, fragment", [("", "names an empty runtime"), ("ncnn,ncnn", "names ncnn twice"),
                                             ("ncnn,", "names an empty runtime")])
def test_runtime_lists_are_checked(bench, tmp_path, value, fragment):
    done = bench("deploy", EXAMPLES / "digits.onnx", "--runtime", value, "--results", tmp_path / "r", *QUICK)
    assert_one_line_error(done, fragment)
