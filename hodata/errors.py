"""User-facing errors: the CLI prints their message on one line, without a traceback."""


class HodataError(Exception):
    """An error caused by input the user can fix; the message names the file and the fix."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: unwinds like Ctrl-C so open outputs are closed cleanly."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


EXIT_OK = 0            # everything asked for was done
EXIT_PARTIAL = 1       # the command finished, but some items failed (listed); or an internal error
EXIT_BAD_INPUT = 2     # bad input or an unusable output stopped the command (one line names it)
EXIT_SIGNAL_BASE = 128  # interrupted by signal N: exit 128 + N (130 SIGINT, 143 SIGTERM)
