"""``python -m flows``: the dataflows' command line (see :mod:`flows.cli`)."""

from flows.cli import app

app(prog_name="python -m flows")
