"""A throwaway PostgreSQL server for the tests: Debian's server binaries, ``initdb`` and
``pg_ctl`` on a temporary directory and a free loopback port.

PostgreSQL refuses to run as root, so when the tests run as root the server runs as the
``postgres`` user (which Debian's package creates) in a directory it owns. Trust
authentication on 127.0.0.1 only; ``fsync=off`` because nothing here survives the test
session: a COMMIT is still written to the WAL before it returns, so even a
``-m immediate`` stop (a crash of the server, not of the machine) loses nothing.
"""
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile


def find_bindir():
    """The newest installed server's bin directory, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    env = os.environ.get("PG_BINDIR")
    if env:
        return env if os.path.exists(os.path.join(env, "initdb")) else None
    return os.path.dirname(found[-1]) if found else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Starts of a new server, each on a port found free: another process (a suite running
# beside this one, any connection's ephemeral port) may take the port between
# free_port() and the server's bind, a window as long as initdb.
PORT_TRIES = 5
PORT_TAKEN = "Address already in use"


class PgServer:
    def __init__(self, bindir, max_connections=400):
        self.bindir = bindir
        self.root = tempfile.mkdtemp(prefix="hls-pg-")
        self.data = os.path.join(self.root, "data")
        self.log = os.path.join(self.root, "server.log")
        self.port = free_port()
        self.max_connections = max_connections
        self.user = None
        if os.geteuid() == 0:
            self.user = pwd.getpwnam("postgres")
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        os.chmod(self.root, 0o700)
        self._n = 0
        self.started = False

    def _run(self, *args, check=True):
        kw = {}
        if self.user is not None:
            kw = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        return subprocess.run([os.path.join(self.bindir, args[0]), *args[1:]], check=check,
                              capture_output=True, text=True, cwd=self.root, timeout=120,
                              **kw)

    def init(self):
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync",
                  "-E", "UTF8", "--locale=C")
        return self

    def start(self):
        """Start the server. A first start whose port was taken meanwhile (its log says
        so) tries another free one, up to PORT_TRIES; a restart keeps its port, which
        the URLs handed out name."""
        for _ in range(1 if self.started else PORT_TRIES):
            logged = os.path.getsize(self.log) if os.path.exists(self.log) else 0
            opts = ("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=%d "
                    "-c fsync=off -c full_page_writes=off"
                    % (self.port, self.root, self.max_connections))
            proc = self._run("pg_ctl", "-D", self.data, "-l", self.log, "-o", opts, "-w",
                             "-t", "60", "start", check=False)
            if proc.returncode == 0:
                self.started = True
                return self
            with open(self.log, errors="replace") as f:
                f.seek(logged)
                if self.started or PORT_TAKEN not in f.read():
                    break
            self.port = free_port()
        raise subprocess.CalledProcessError(proc.returncode, proc.args, proc.stdout,
                                            proc.stderr)

    def stop(self, mode="fast"):
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop",
                  check=False)

    def url(self, database="postgres"):
        return "postgresql+psycopg://postgres@127.0.0.1:%d/%s" % (self.port, database)

    def create_database(self, prefix="t"):
        """A fresh, empty database; its SQLAlchemy URL."""
        import psycopg

        self._n += 1
        name = "%s_%d" % (prefix, self._n)
        with psycopg.connect("host=127.0.0.1 port=%d user=postgres dbname=postgres"
                             % self.port, autocommit=True) as conn:
            conn.execute('CREATE DATABASE "%s"' % name)
        return self.url(name)

    def sql(self, url, statement, params=None):
        """Run one statement through psycopg directly (test-side inspection)."""
        import psycopg

        dbname = url.rsplit("/", 1)[1]
        with psycopg.connect("host=127.0.0.1 port=%d user=postgres dbname=%s"
                             % (self.port, dbname), autocommit=True) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else None

    def cleanup(self):
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
