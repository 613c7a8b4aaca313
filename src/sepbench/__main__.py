"""``python -m sepbench``: the same as the ``sepbench`` command."""

from sepbench.cli import main

main()
