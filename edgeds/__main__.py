"""``python -m edgeds`` is the ``edgeds`` command."""

from .cli import main

main()
