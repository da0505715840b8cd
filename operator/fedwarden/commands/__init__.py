"""Subcommands of the ``fedwarden`` command; each module holds one, registered in ``cli.py``."""
