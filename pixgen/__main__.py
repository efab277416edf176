"""``python -m pixgen ...``: the same command line as the ``pixgen`` script, for when the script is not on PATH
(a virtual environment that is not activated, say)."""
from pixgen.cli import main

main()
