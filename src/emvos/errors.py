"""Errors that reach the user as one line and exit code 2 (bad input, not a bug in emvos)."""

from __future__ import annotations


class EmvosInputError(Exception):
    """Raised where user input enters (files, masks, options, checkpoints).

    The message is one line that names the offending file or option and says how to fix it.
    The command-line interface prints it as ``emvos: error: <message>`` and exits with status 2.
    """


class EmvosInputWarning(UserWarning):
    """Input that emvos repaired or read in a way the user should know about (a colour mask's ids,
    a thresholded or resized mask). The command-line interface prints it as ``emvos: warning: <message>``."""
