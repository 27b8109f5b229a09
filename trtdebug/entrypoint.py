"""The console script's first code: Ctrl-C while the CLI is still importing is one line and 130 too.

``trtdebug.cli`` imports typer and rich (a few hundred milliseconds); an interrupt there would
otherwise print an import traceback.  Everything after the import is handled by
:func:`trtdebug.cli.main`.
"""
import sys

from trtdebug.errors import EXIT_INTERRUPTED


def main(argv=None) -> None:
    try:
        from trtdebug.cli import main as cli_main
    except KeyboardInterrupt:
        print("trtdebug: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    cli_main(argv)
