"""The one exception type the command line turns into a one-line error."""

#: Set it (to anything) to see tracebacks instead of one-line messages.
DEBUG_VARIABLE = "CERTIFY_DEBUG"


class CertifyError(Exception):
    """A problem the user can fix: the message names it and says what to do."""


def caused_by_interrupt(error: BaseException) -> bool:
    """Whether ``error`` came from Ctrl-C: an extension module interrupted while it
    initializes raises ImportError("initialization failed") from the KeyboardInterrupt."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False
