"""Scripts of the command layer that are not ``lopt`` subcommands (run with ``python -m``)."""
