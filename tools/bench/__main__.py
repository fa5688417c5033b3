"""``python -m tools.bench``: see :mod:`tools.bench`."""

from . import main

main()
