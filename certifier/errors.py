"""The one exception type the command line turns into a one-line error."""

#: Set it (to anything) to see tracebacks instead of one-line messages.
DEBUG_VARIABLE = "CERTIFY_DEBUG"


class CertifyError(Exception):
    """A problem the user can fix: the message names it and says what to do."""


class MissingNoiseScale(CertifyError):
    """A smoothing method that needs a noise level got none: no ``--sigma``, no value of its own
    scale option, and nothing recorded for it in the model."""


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


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (at most 300 characters), or the name of its
    type when it has no message."""
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def one_line(error: BaseException) -> str:
    """"Type: first line of the message", for a one-line report of an exception."""
    name = type(error).__name__
    return f"{name}: {first_line(error)}" if str(error).strip() else name
