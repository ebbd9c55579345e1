"""The one marker for mistakes a user can fix: bad options, bad data, a wrong path, a reward
function that misbehaves. The ``rlhf`` command prints such an error as one line saying what to
do (a traceback only with ``--debug``); anything else is a bug and keeps its traceback."""

from __future__ import annotations


class UserError(Exception):
    """Raised for input a user can fix; the message must name what is wrong and what to do."""
