"""Why a path cannot be opened, said so that an operator can act on it.

SQLite reports a file it may not open as "unable to open database file", and a directory
on the way that may not be entered makes the file look absent. Once an open has failed,
this module finds the first path that stops this user and names it, its owner and its
mode, and what to do. Loaded only after a failure: the plugin's hot path never pays.
"""
import os
import stat

from ipam.paths import SQLITE_SHM, SQLITE_WAL

EACCES = 13
EPERM = 1
R, W, X = 4, 2, 1  # the bits of one rwx triplet


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
        st = _stat(d)
        if st is None:
            return None  # a missing directory is not about permissions
        if not _allowed(st, X):
            return _failure(d, st, "enter", hint)
    st, up = _stat(path), _stat(parent)
    if st is None:
        if write and not _allowed(up, W):
            return _failure(parent, up, "create files in", hint)
        return None
    want, verb = (R | W, "read and write") if write else (R, "read")
    if stat.S_ISDIR(st.st_mode):
        want |= X
        verb = "read and write in" if write else "read"
    if not _allowed(st, want):
        return _failure(path, st, verb, hint)
    if write and not _allowed(up, W):
        return _failure(parent, up, "create files in", hint)
    for sidecar in (path + SQLITE_WAL, path + SQLITE_SHM):  # SQLite's, beside a database
        side = _stat(sidecar)
        if side is not None and not _allowed(side, want):
            return _failure(sidecar, side, verb, hint)
    return None


def _stat(path):
    try:
        return os.stat(path)
    except OSError:
        return None


def _allowed(st, want):
    """What the owner, group and mode allow this user: the rule the message explains.
    Nothing else (a read-only mount, the immutable flag) is called a permission here;
    those keep the error they had."""
    if st is None:
        return True
    uid = os.geteuid()
    if uid == 0:  # root: anything but executing what no one may execute
        return not want & X or bool(st.st_mode & 0o111) or stat.S_ISDIR(st.st_mode)
    if st.st_uid == uid:
        bits = st.st_mode >> 6
    elif st.st_gid == os.getegid() or st.st_gid in os.getgroups():
        bits = st.st_mode >> 3
    else:
        bits = st.st_mode
    return bits & want == want


def _ancestors(directory):
    out = []
    while True:
        out.append(directory)
        up = os.path.dirname(directory)
        if up == directory:
            return out[::-1]
        directory = up


def _failure(path, st, verb, hint):
    from ipam.errors import IoFailure

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
