"""The one exception type the command line turns into a one-line error."""

#: Set it (to anything) to see tracebacks instead of one-line messages.
DEBUG_VARIABLE = "CERTIFY_DEBUG"


class CertifyError(Exception):
    """A problem the user can fix: the message names it and says what to do."""
