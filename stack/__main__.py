"""``python -m stack up|down|status``: the same commands as ``coach stack``."""

from stack.cli import app

app(prog_name="python -m stack")
