"""The one exception type the command line turns into a one-line error."""


class CertifyError(Exception):
    """A problem the user can fix: the message names it and says what to do."""
