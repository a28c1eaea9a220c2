"""The kit's one error type: every failure a user can act on, with a one-line message and an exit code.

The library raises it (or a subclass); the CLI turns it into Click's error in one place (cli.KitErrors).
Codes stay clear of Click's: 2 is a usage error.
"""


class KitError(Exception):
    """Something the user can fix; the message says what. Ends the CLI with exit_code."""

    exit_code = 1


class DataError(KitError):
    """The MNIST files are missing or corrupt; the message says what to do."""

    exit_code = 3
