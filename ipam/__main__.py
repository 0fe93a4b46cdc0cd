"""``python -m ipam``, the ``host-local-sqlite`` console script, and the launcher's entry."""
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations are strings, so this costs nothing at run time
    from typing import Callable, Optional


def run(prepare: "Optional[Callable[[], None]]" = None) -> "None":
    """Run one CNI command and leave at once: on the node daemon if there is one
    (:mod:`ipam.client`), else in this process, after ``prepare()`` (the launcher's:
    serve the hot path's modules from its bundle, which a forwarded call never needs).

    The result is on stdout and COMMITted (durable: synchronous=FULL) before this
    returns, so the process skips the interpreter's teardown and the database close: a
    close would checkpoint the WAL and delete it (one more fsync), only for the next
    invocation to create it again. Nor can SQLite's automatic checkpoints keep the WAL
    short across one-shot processes (each rebuilds the WAL index and forgets what was
    checkpointed), so the SQLite store truncates it itself, after COMMIT and still in
    the writers' queue, once it passes 1 MiB (``trim_wal`` in the SQLite store's
    ``sqlite_db`` module).
    """
    import gc

    gc.disable()  # a one-shot process: collecting cycles at exit buys nothing
    from ipam import client

    status, data = client.forward()
    if status is None:
        if prepare is not None:
            prepare()
        status = _in_process(data)
    import posix  # not ipam.system: a forwarded call never imports it

    posix._exit(status)


def _in_process(data: "Optional[bytes]") -> "int":
    """The call in this process; ``data``: stdin, if the client read it already."""
    from ipam import commands
    from ipam.cni import main

    commands.KEEP_OPEN = True
    if data is None:
        status = main()
    else:
        import io

        status = main(stdin=io.BytesIO(data))
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # EPIPE: the answer was reported lost already
            status = status or 1
    return status


if __name__ == "__main__":
    run()
