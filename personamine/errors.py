"""The one exception type a user sees: the CLI prints its message on one line and exits non-zero."""


class PersonamineError(Exception):
    """Bad input or an unrecoverable run failure, with a message that says what to change."""
