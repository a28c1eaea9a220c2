"""A request the model cannot read, and the HTTP status each runtime answers it with: the one error type of the
serving core (decoding, reading request bodies, the runtimes' own checks such as a wrong model name). Packed into
the .mar beside the handler."""


class InputError(ValueError):
    """A request the model cannot read: `status` is the HTTP status to answer with, `reason` its metric label."""

    def __init__(self, message: str, status: int = 400, reason: str = "invalid"):
        super().__init__(message)
        self.status = status
        self.reason = reason
