"""The agent bundle's own __main__ (the .pyz's root; agent_bundle.py puts this file there).

Python cannot cache compiled bytecode for modules imported from a zip: every start of the agent compiles all of it
again, which on a Pi (or under qemu) is most of what a command's start costs. So a command given `--cache DIR` (every
command the host sends) runs the agent from an unpacked copy of the bundle in that cache folder,
DIR/agent-<sha>.pyz.d, made here on first use (unpacked beside, then renamed: a copy that exists is whole); Python
writes the bytecode there once. A person running the .pyz without --cache, or a cache where no copy can be made,
runs from the zip as before. Nothing of the agent is imported before the choice is made.
"""

import os
import re
import sys

# Only a bundle named by its content (agent-<sha256 prefix>.pyz, as the host uploads it) is unpacked: a copy named
# after any other file could outlive a change to that file.
CONTENT_NAMED = re.compile(r"agent-[0-9a-f]{12}\.pyz\Z")


def _unpacked_copy(bundle, argv):
    """The folder holding an unpacked copy of `bundle` in the --cache folder, or None (run from the zip)."""
    if "--cache" not in argv[:-1] or not CONTENT_NAMED.match(os.path.basename(bundle)):
        return None
    cache = os.path.abspath(os.path.expanduser(argv[argv.index("--cache") + 1]))
    copy = os.path.join(cache, os.path.basename(bundle) + ".d")
    marker = os.path.join(copy, "edgebench_agent", "__init__.py")
    if os.path.isfile(marker):
        return copy
    if not os.path.isdir(cache) or not os.path.isfile(bundle):
        return None
    import tempfile
    import zipfile

    try:
        partial = tempfile.mkdtemp(prefix=".unpack-", dir=cache)
    except (IOError, OSError):
        return None
    try:
        with zipfile.ZipFile(bundle) as archive:
            archive.extractall(partial, [n for n in archive.namelist() if n.startswith("edgebench_agent/")])
        os.rename(partial, copy)
    except (IOError, OSError, zipfile.BadZipfile):
        import shutil

        shutil.rmtree(partial, ignore_errors=True)  # another command may have won the race: its copy is whole
    return copy if os.path.isfile(marker) else None


def main():
    bundle = os.path.abspath(sys.argv[0])
    copy = _unpacked_copy(bundle, sys.argv)
    if copy is not None and sys.path and os.path.abspath(sys.path[0]) == bundle:
        sys.path[0] = copy
    from edgebench_agent.__main__ import run_as_program

    run_as_program()


if __name__ == "__main__":
    main()
