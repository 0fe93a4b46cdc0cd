"""``python -m ipam`` and the ``host-local-sqlite`` console script (:func:`run`, the
launcher's entry too, is :func:`ipam.client.run`), and a call run in this process."""
import sys

from ipam.client import run

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations are strings, so this costs nothing at run time
    from typing import Optional

__all__ = ["run", "in_process"]


def in_process(data: "Optional[bytes]") -> "int":
    """The call in this process, for :func:`ipam.client.run` when no daemon took it;
    ``data``: stdin, if the client read it already. Returns the exit status.

    The result is on stdout and COMMITted (durable: synchronous=FULL) before this
    returns, and the caller ends the process at once, skipping the interpreter's
    teardown and the database close: a close would checkpoint the WAL and delete it
    (one more fsync), only for the next invocation to create it again. Nor can
    SQLite's automatic checkpoints keep the WAL short across one-shot processes (each
    rebuilds the WAL index and forgets what was checkpointed), so the SQLite store
    truncates it itself, after COMMIT and still in the writers' queue, once it passes
    1 MiB (``trim_wal`` in the SQLite store's ``sqlite_db`` module).
    """
    from ipam.cni import main
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


if __name__ == "__main__":
    run()
