"""``python -m mmbot.cli``: the ``mmbot`` command."""

from mmbot.cli.main import main

main()
