"""The CNI protocol: environment, stdin, the checks the Go ``skel`` library makes, and
the one place where exceptions become CNI error objects.

Everything a runtime sees is decided here or in :mod:`ipam.result`: the order of the
checks and their messages follow cni's ``skel`` (v1.0.1, with GC and STATUS as routed
by later versions), so that a runtime cannot tell us from host-local except where
docs/differences.md says so.
"""
import sys

from ipam import jsonio, result, system
from ipam.config import SUPPORTED_VERSIONS, go_quote, json_type, version_tuple
from ipam.errors import (
    ConfigError,
    ContainerUnknown,
    DecodeError,
    EnvError,
    Interrupted,
    IoFailure,
    IpamError,
    VersionError,
)
from ipam.process import MAX_STDIN, SIGNALS, armed

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations are strings, so this costs nothing at run time
    from typing import Any, BinaryIO, Iterable, Mapping, Optional, TextIO

    from ipam.commands import CallContext

ABOUT = "CNI host-local-sqlite plugin (host-local compatible, SQLite leases)"
_VARS = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")
_REQUIRED = {
    "ADD": {"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"},
    "CHECK": {"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"},
    "DEL": {"CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"},
    "GC": {"CNI_PATH"},
    "STATUS": {"CNI_PATH"},
}
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME_CHARS = _ALNUM | frozenset("_.-")


def valid_name(s: "str") -> "bool":
    r"""skel's ``^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`` for network names and container IDs
    (without ``re``, which the hot path does not import)."""
    return bool(s) and s[0] in _ALNUM and _NAME_CHARS.issuperset(s)


def _lower_keys(pairs: "Iterable[tuple[str, Any]]") -> "dict[str, Any]":
    """Go matches JSON keys to struct fields case-insensitively; the last duplicate wins."""
    return {k.lower(): v for k, v in pairs}


def decode_config(data: "bytes") -> "dict[str, Any]":
    """stdin bytes -> dict with lower-cased keys (skel's validateConfig, code 6/7)."""
    try:
        text = data.decode("utf-8", "replace")  # Go replaces invalid UTF-8 too
        conf = jsonio.loads(text, object_pairs_hook=_lower_keys)
    except (ValueError, RecursionError) as e:
        raise DecodeError("error unmarshall network config: %s" % e) from None
    if not isinstance(conf, dict):
        raise DecodeError("error unmarshall network config: json: cannot unmarshal %s into Go "
                          "value of type struct { Name string \"json:\\\"name\\\"\" }"
                          % json_type(conf))
    name = conf.get("name")
    if name is not None and not isinstance(name, str):
        raise DecodeError("error unmarshall network config: json: cannot unmarshal %s into Go "
                          "struct field .name of type string" % json_type(name))
    if not name:
        raise ConfigError("missing network name")
    if not valid_name(name):
        raise ConfigError("invalid characters found in network name", name)
    return conf


def validate_container_id(cid: "str") -> "None":
    if not cid:
        raise ContainerUnknown("missing containerID")
    if not valid_name(cid):
        raise EnvError("invalid characters in containerID", cid)


def validate_ifname(name: "str") -> "None":
    if not name:
        raise EnvError("interface name is empty")
    # Go's len() counts bytes: the kernel's IFNAMSIZ is 16 bytes with the NUL. The
    # environment's bytes come back exactly through surrogateescape.
    if len(name.encode("utf-8", "surrogateescape")) > 15:
        raise EnvError("interface name is too long",
                       "interface name should be less than 16 characters")
    if name in (".", ".."):
        raise EnvError("interface name is . or ..")
    if any(c in "/:" or c.isspace() for c in name):
        raise EnvError("interface name contains / or : or whitespace characters")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise EnvError("interface name is not valid UTF-8") from None


def _config_version(conf: "dict[str, Any]") -> "str":
    version = conf.get("cniversion")
    if version is not None and not isinstance(version, str):
        raise DecodeError("json: cannot unmarshal %s into Go struct field .cniVersion of type "
                          "string" % json_type(version))
    return version or "0.1.0"


def check_version(conf: "dict[str, Any]", command: "str") -> "None":
    """skel's version rules: CHECK needs 0.4.0, GC and STATUS need 1.1.0."""
    version = _config_version(conf)
    minimum = {"CHECK": (0, 4, 0), "GC": (1, 1, 0), "STATUS": (1, 1, 0)}.get(command)
    if minimum is not None:
        try:
            too_old = version_tuple(version) < minimum
        except ValueError as e:
            raise DecodeError(str(e)) from None
        if too_old:
            raise VersionError("config version does not allow %s" % command)
    if version not in SUPPORTED_VERSIONS:
        raise VersionError("incompatible CNI versions", "config is %s, plugin supports [%s]" % (
            go_quote(version), " ".join(go_quote(v) for v in SUPPORTED_VERSIONS)))


def dispatch(env: "Mapping[str, str]", stdin: "BinaryIO",
             context: "Optional[CallContext]" = None) -> "str":
    """Run one invocation; return the text for stdout, or raise IpamError. ``context``:
    how the caller runs it (:class:`ipam.commands.CallContext`; default: once, then
    close)."""
    command = env.get("CNI_COMMAND", "")
    missing = [v for v in _VARS
               if not env.get(v) and (v == "CNI_COMMAND" or v in _REQUIRED.get(command, ()))]
    if missing:
        if not command:
            _stderr(context).write("%s\nCNI protocol versions supported: %s\n"
                                   % (ABOUT, ", ".join(SUPPORTED_VERSIONS)))
            return ""
        raise EnvError("required env variables [%s] missing" % ",".join(missing))
    if command == "VERSION":
        return result.version_output()
    try:
        data = stdin.read(MAX_STDIN + 1)
    except OSError as e:
        raise IoFailure("error reading from stdin: %s" % e) from None
    if len(data) > MAX_STDIN:
        raise IoFailure("error reading from stdin: more than %d bytes" % MAX_STDIN)
    conf = decode_config(data)
    if command not in ("GC", "STATUS"):
        validate_container_id(env.get("CNI_CONTAINERID", ""))
        validate_ifname(env.get("CNI_IFNAME", ""))
    from ipam.commands import HANDLERS

    handler = HANDLERS.get(command)
    if handler is None:
        raise EnvError("unknown CNI_COMMAND: %s" % command)
    check_version(conf, command)
    return handler(env, conf, context)




def _stderr(context: "Optional[CallContext]") -> "TextIO":
    """Where the call's diagnostics go: its context's stream, else the process's."""
    stream = context.stderr if context is not None else None
    return sys.stderr if stream is None else stream


def changed_under_us(err: "ImportError") -> "IoFailure":
    """A module the call imports lazily (``ipam.mirror.reconcile`` after a foreign change, the
    migrations, a driver) cannot be loaded: the plugin's own files changed or vanished
    under the running call (its build's copy removed, the package upgraded or removed
    meanwhile) or are damaged. Not a bug of the call: code 5, saying what to do, as
    when the build or the launcher cannot load the plugin at its start. The next call
    runs what is installed then."""
    if getattr(sys, "frozen", False):
        where = "the build at %s" % system.dirname(sys.executable)
        fix = "unpack it again, or run its ipamctl install-plugin"
    else:
        where = "this installation"
        fix = "reinstall it, then run 'ipamctl install-plugin' again"
    return IoFailure("host-local-sqlite: cannot load the plugin's modules (%s): %s changed "
                     "or is damaged under this call; %s" % (err, where, fix))


def _interrupted(signum: "int") -> "Interrupted":
    return Interrupted("interrupted by %s; try again" % SIGNALS.get(signum, signum))


def main(env: "Optional[Mapping[str, str]]" = None, stdin: "Optional[BinaryIO]" = None,
         stdout: "Optional[TextIO]" = None, context: "Optional[CallContext]" = None
         ) -> "int":
    """Entry point: prints a result or a CNI error object; returns the exit status.

    SIGINT, SIGTERM and SIGHUP become an error object too (code 11), raised where the
    call is, so that its transaction rolls back on the way out; once the answer is
    decided, they change nothing (:class:`ipam.process.Guard`)."""
    env = dict(env) if env is not None else system.environ()
    stdin = stdin if stdin is not None else sys.stdin.buffer
    stdout = stdout if stdout is not None else sys.stdout
    try:
        with armed(_interrupted):  # the answer decided, a signal changes nothing
            out = dispatch(env, stdin, context)
        status = 0
    except IpamError as e:
        out, status = result.error_output(e), 1
    except MemoryError:
        out, status = result.error_output(IpamError("out of memory")), 1
    except ImportError as e:  # a module imported on the way: see changed_under_us
        out, status = result.error_output(changed_under_us(e)), 1
    except Exception as e:  # never a traceback on the runtime's stdout
        system.warn("internal error: %r" % (e,), _stderr(context))
        out, status = result.error_output(IpamError("internal error: %s" % e)), 1
    try:
        out.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: a "\ud800" escape, non-UTF-8 env bytes
        out = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in out)
    try:
        stdout.write(out)
        stdout.flush()
    except (OSError, ValueError) as e:  # the runtime stopped reading (EPIPE): no one to tell
        system.warn("cannot write the answer: %s" % e, _stderr(context))
        return status or 1
    return status


def in_process(data: "Optional[bytes]") -> "int":
    """The call in this process, for the plugin's entry (:func:`ipam.client.run`) when no
    daemon took it; ``data``: stdin, if the client read it already. Returns the exit
    status.

    The result is on stdout and COMMITted (durable: synchronous=FULL) before this
    returns, and the caller ends the process at once, skipping the interpreter's
    teardown and the database close: a close would checkpoint the WAL and delete it
    (one more fsync), only for the next invocation to create it again. Nor can
    SQLite's automatic checkpoints keep the WAL short across one-shot processes (each
    rebuilds the WAL index and forgets what was checkpointed), so the SQLite store
    truncates it itself, after COMMIT and still in the writers' queue, once it passes
    1 MiB (``trim_wal`` in the SQLite store's ``sqlite_db`` module).
    """
    from ipam.commands import CallContext

    context = CallContext(keep_open=True)
    if data is None:
        status = main(context=context)
    else:
        import io

        status = main(stdin=io.BytesIO(data), context=context)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # EPIPE: the answer was reported lost already
            status = status or 1
    return status

