"""The one exception type a user sees: the CLI prints its message on one line and exits non-zero."""


class PersonamineError(Exception):
    """Bad input or an unrecoverable run failure, with a message that says what to change."""


class FeatureNotInFile(PersonamineError, KeyError):
    """A feature id that a results file does not hold. Also a ``KeyError``, which lookups raised before."""

    def __str__(self) -> str:  # KeyError's own __str__ would quote the message
        return str(self.args[0]) if self.args else ""


def one_line(message: str) -> str:
    """A message on one line whatever it quotes (HDF5's errors, for one, hold a newline inside their timestamp)."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip()) if "\n" in message else message
