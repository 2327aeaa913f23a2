"""The agent as one .pyz file: built reproducibly from agent/edgebench_agent, named by its content hash.

Deploy ships this file, the local target runs it, and `bench agent bundle` hands it to a person: one build,
one hash, so a board runs exactly the agent the host was tested with.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import zipfile
from pathlib import Path

from ..fileio import cache_dir  # noqa: F401 (where the bundle is kept; others import it from fileio)

from ..agentlib import sha256_bytes

# Fixed zip timestamps make the bundle byte-for-byte reproducible, so its hash names its content.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_SHEBANG = b"#!/usr/bin/env python3\n"


def _package() -> Path:
    spec = importlib.util.find_spec("edgebench_agent")
    assert spec is not None and spec.origin is not None, "edgebench_agent is installed with edgebench"
    return Path(spec.origin).parent


def _agent_sources() -> list[tuple[str, bytes]]:
    """Every .py file of the agent package and its subpackages (shared/), by path inside the bundle."""
    package = _package()
    return [(f"edgebench_agent/{p.relative_to(package).as_posix()}", p.read_bytes())
            for p in sorted(package.rglob("*.py")) if "__pycache__" not in p.parts]


@functools.lru_cache(maxsize=1)
def bundle_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        # the bundle's own __main__: it runs the agent from an unpacked copy in the board's cache when it can
        bootstrap = (_package() / "_pyz_main.py").read_bytes()
        for name, data in [("__main__.py", bootstrap), *_agent_sources()]:
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return _SHEBANG + buffer.getvalue()


def ensure_bundle(folder: Path | None = None) -> Path:
    """Path of the current agent bundle in the cache, written (atomically) when missing."""
    from ..fileio import file_sha256, write_atomically

    data = bundle_bytes()
    digest = sha256_bytes(data)
    path = (folder or cache_dir()) / f"agent-{digest[:12]}.pyz"
    if not (path.is_file() and file_sha256(path) == digest):
        write_atomically(path, data, mode=0o755)
    return path
