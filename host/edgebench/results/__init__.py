"""What runs leave, and how it is read: result files (files: versioned JSON written atomically, migrated on read;
schema: the type checks every field a report reads passes through), the results index (index: DuckDB, sealed),
statistics (stats), the comparison and its tables (report, tables) and the HTML reports (html).

A results folder is hostile data until checked. results/ may import models/ (a variant's provenance) and the
shared modules at the top; never boards/, stages/, the CLI or the API -- tests/test_architecture.py checks.
"""
