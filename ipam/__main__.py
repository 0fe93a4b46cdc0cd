"""``python -m ipam`` and the ``host-local-sqlite`` console script."""
import sys


def run() -> "None":
    """Run one CNI command and leave at once.

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
    from ipam import commands, system
    from ipam.cni import main

    commands.KEEP_OPEN = True
    status = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # EPIPE: the answer was reported lost already
            status = status or 1
    system._exit(status)


if __name__ == "__main__":
    run()
