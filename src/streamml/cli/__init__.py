"""The command line (``streamml``): :mod:`streamml.cli.main` assembles it from one module per group of
commands, with shared options in :mod:`streamml.cli.options`."""
