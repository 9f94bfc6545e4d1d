"""The errors a user can act on. Each message names the file or key at fault and what to do.

The command line (:mod:`pipeline.__main__`) turns these into one line on stderr and exit status 2,
instead of a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ArtifactError(RuntimeError):
    """An input artifact (checkpoint, label file, activation/probe file, table) is unreadable,
    incomplete, corrupt or belongs to another run/model; the message names it and the remedy."""
