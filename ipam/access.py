"""Why a path cannot be opened, said so that an operator can act on it.

SQLite reports a file it may not open as "unable to open database file", and a directory
on the way that may not be entered makes the file look absent. Once an open has failed,
this module finds the first path that stops this user and names it, its owner and its
mode, and what to do. Loaded only after a failure: the plugin's hot path never pays.
"""
import os

EACCES = 13
EPERM = 1


def is_denied(err):
    """An ``OSError`` that is about permissions."""
    return getattr(err, "errno", None) in (EACCES, EPERM)


DATABASE = "ipamctl --database, or the config's \"database\""
DATA_DIR = "ipamctl --data-dir, or the config's \"dataDir\""


def denied(path, write=False, hint=DATABASE):
    """An :class:`~ipam.errors.IoFailure` naming what keeps this user from ``path``
    (reading it, or with ``write`` also writing it and creating files beside it, as
    SQLite's journals and our lock files need), or None when permissions are not why.
    ``hint`` says where another path is named."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    for d in _ancestors(parent):
        if not os.path.exists(d):
            return None  # a missing directory is not about permissions
        if not os.access(d, os.X_OK):
            return _failure(d, "enter", hint)
    if not os.path.exists(path):
        if write and os.path.isdir(parent) and not os.access(parent, os.W_OK):
            return _failure(parent, "create files in", hint)
        return None
    mode = os.R_OK | (os.W_OK if write else 0)
    verb = "read and write" if write else "read"
    if os.path.isdir(path):
        mode, verb = os.R_OK | os.X_OK | (os.W_OK if write else 0), (
            "read and write in" if write else "read")
    if not os.access(path, mode):
        return _failure(path, verb, hint)
    if write and not os.access(parent, os.W_OK):
        return _failure(parent, "create files in", hint)
    for sidecar in (path + "-wal", path + "-shm"):  # SQLite's, beside a database
        if os.path.exists(sidecar) and not os.access(sidecar, mode):
            return _failure(sidecar, verb, hint)
    return None


def _ancestors(directory):
    out = []
    while True:
        out.append(directory)
        up = os.path.dirname(directory)
        if up == directory:
            return out[::-1]
        directory = up


def _failure(path, verb, hint):
    from ipam.errors import IoFailure

    st = os.stat(path)
    owner, group = _user(st.st_uid), _group(st.st_gid)
    me = _user(os.geteuid())
    who = "root" if owner == "root" else "root or as %s (the owner)" % owner
    return IoFailure(
        "permission denied: user %s (uid %d) cannot %s %s (owner %s:%s, mode %04o)"
        % (me, os.geteuid(), verb, path, owner, group, st.st_mode & 0o7777),
        "run as %s, or use a path this user may open (%s)" % (who, hint))


def _user(uid):
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid):
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
