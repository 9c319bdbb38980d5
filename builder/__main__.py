# A Ctrl-C while builder is still importing exits 130 like one during a command
# (builder.cli installs the full handlers as soon as it runs).
import signal
import sys

signal.signal(signal.SIGINT, lambda _s, _f: sys.exit(130))

from builder.cli.app import run  # noqa: E402

run()
