"""Every failure the plugin can report, each with its CNI error code.

The codes follow the CNI spec's table of well-known errors; ``cni.py`` is the one place
that turns these into the ``{"code", "msg", "details"}`` object on stdout. Allocation
failures keep host-local's code 999 (the Go library's ErrInternal) and its message texts,
so that runtimes and scripts matching on them see no difference.

Code 2 (unsupported field) has no class: host-local decodes its config with Go's
``encoding/json``, which ignores keys it does not know (``LoadIPAMConfig`` in
plugins/ipam/host-local/backend/allocator/config.go), and so do we, since a runtime or
main plugin may add keys of its own to the config every plugin receives.
"""


class IpamError(Exception):
    """Base class: ``code`` is the CNI error code, ``msg``/``details`` go to the runtime."""

    code = 999
    # True when the command may have committed after all (SQLite's COMMIT failed while
    # syncing a WAL that already holds the commit: the next process's recovery decides).
    # Nothing may then be undone from this process's view of the database.
    outcome_unknown = False

    def __init__(self, msg: "str", details: "str" = "") -> "None":
        super().__init__(msg)
        self.msg = msg
        self.details = details


class VersionError(IpamError):
    """The config's cniVersion is not one we speak (spec code 1)."""

    code = 1


class ContainerUnknown(IpamError):
    """Container unknown or missing (spec code 3); the runtime needs no cleanup."""

    code = 3


class EnvError(IpamError):
    """Invalid or missing CNI_* environment variables (spec code 4)."""

    code = 4


class IoFailure(IpamError):
    """Reading stdin, a resolv.conf or the database failed (spec code 5)."""

    code = 5


class DecodeError(IpamError):
    """The config is not decodable JSON (spec code 6)."""

    code = 6


class ConfigError(IpamError):
    """The network config is invalid (spec code 7); host-local reports these as 999."""

    code = 7


class SchemaError(ConfigError):
    """The database's schema is missing, damaged or newer than this version knows."""


class TryAgain(IpamError):
    """Transient: the database stayed locked past the busy timeout (spec code 11)."""

    code = 11


class Retry(TryAgain):
    """A shared database refused this attempt in a way another attempt fixes: a unique
    clash with another node, a deadlock, a serialization failure, a connection lost.
    The command runs again after a pause; past the last attempt it is code 11."""


class Interrupted(TryAgain):
    """A signal (SIGINT, SIGTERM, SIGHUP) ended the call: its transaction rolled back (or,
    if it came after COMMIT, a repeated ADD returns what was committed); code 11."""


class Unavailable(IpamError):
    """STATUS: the plugin cannot service an ADD, e.g. a range set is exhausted (code 50)."""

    code = 50


class AllocationError(IpamError):
    """No address could be handed out, or a requested one is taken (host-local's 999)."""

    code = 999


class NodeConflict(IpamError):
    """GC refused: two hosts use this node's name at once (:mod:`ipam.node_boots`), so
    the name's leases cannot be told apart. host-local has no such failure; it keeps
    host-local's code for every failure the spec names no code for (999)."""

    code = 999


class NotFound(IpamError):
    """CHECK found no lease for the attachment (host-local's 999 and message)."""

    code = 999


class CriError(IoFailure):
    """``ipamctl gc --cri``: the CRI runtime could not be asked (not answering, an error
    answer, or no gRPC installed), so there is no list of live pod sandboxes to judge
    by, and nothing is released. Never a plugin call's error; an I/O failure by the
    spec's table (code 5)."""
