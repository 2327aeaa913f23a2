"""The stages: one module per `bench` command's work, plus the passes a deploy runs.

export, validate (and inspect), convert, deploy, run (plan), compare, history, import (importer), doctor, diverge,
tune, demo; deploy's passes: accuracy, energy, pipeline. A stage is plain Python: it takes typed values, returns
what it found, raises the errors of edgebench.errors. Stages may import models/, boards/, results/ and the shared
modules at the top (errors, fileio, agentlib, yamlconf, progress); never the CLI (cli, cli_help, options) or the
API -- tests/test_architecture.py checks.
"""
