"""`python -m edgebench` is `bench`."""

from .cli import main

main()
