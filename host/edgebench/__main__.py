"""`python -m edgebench` is `bench`."""

from .entry import main

main()
