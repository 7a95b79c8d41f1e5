"""Errors that reach the user as one line and exit code 2 (bad input, not a bug in emvos)."""

from __future__ import annotations

from collections.abc import Mapping


class EmvosInputError(Exception):
    """Raised where user input enters (files, masks, options, checkpoints).

    The message is one line that names the offending file or option and says how to fix it.
    The command-line interface prints it as ``emvos: error: <message>`` and exits with status 2.
    """


class ParameterError(EmvosInputError, ValueError):
    """A library call's argument is invalid; the message names the parameter(s), not a flag.

    A ``ValueError`` for library users; command-line code re-words it with its own flags
    (:meth:`worded`) so that the user reads ``--lookahead must be ...`` instead of ``lookahead ...``.

    Args:
        parameters: the parameter, or the parameters that conflict.
        problem: what is wrong and how to fix it, to follow the parameters' names.
    """

    def __init__(self, parameters: str | tuple[str, ...], problem: str) -> None:
        self.parameters = (parameters,) if isinstance(parameters, str) else parameters
        self.problem = problem
        super().__init__(self.worded({}))

    def worded(self, names: Mapping[str, str]) -> str:
        """The message with each parameter called by ``names`` (its flag, say); others keep their name."""
        return f"{' and '.join(names.get(p, p) for p in self.parameters)} {self.problem}"


class EmvosInputWarning(UserWarning):
    """Input that emvos repaired or read in a way the user should know about (a colour mask's ids,
    a thresholded or resized mask). The command-line interface prints it as ``emvos: warning: <message>``."""
