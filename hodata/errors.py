"""User-facing errors: the CLI prints their message on one line, without a traceback."""


class HodataError(Exception):
    """An error caused by input the user can fix; the message names the file and the fix."""
