"""``python -m kyfs``: the same as the ``kyfs`` command."""

from kyfs.cli import main

main()
