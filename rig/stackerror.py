"""StackError, the one exception the native stack's modules raise for a failure the user can fix
(rig.native and the modules it is built from: rig.ports, rig.binaries, rig.services,
rig.supervisor, rig.stackstate)."""

from __future__ import annotations


class StackError(RuntimeError):
    """A user-facing failure of `rig up` / `rig down`: the message says what, where and what to do."""
