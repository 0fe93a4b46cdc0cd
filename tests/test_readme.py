"""The documents' ipamctl commands are real: every command the README or a page under
docs/ shows, inline or in a shell block, runs with today's options against a pool the
installed plugin made, and succeeds. A section moved from the README to a page keeps its
commands tested: each page is read the same way, and each test is named by its page.

A README that names an option which no longer exists, or a value in a form the option
refuses, fails here. Placeholders (``N``, ``ID``, ``IP``, ``DIR``, ...) and host paths are
replaced by this pool's values and throwaway paths; an optional part (``[--yes]``) is
given. The runtime recipes that feed ``gc`` are run by tests/test_gc.py against fake
runtimes, and ``gc --cri`` here asks gRPC's own server answering as a CRI runtime
that lists the pool's sandboxes (test_containerd asks containerd); each command runs in
process (a process adds nothing to parsing it)."""
import contextlib
import os
import re
import shlex
import shutil

import pytest
from click.testing import CliRunner
from docs_pages import PAGES, read
from helpers import cri_runtime, run_plugin

from host_local_sqlite_cli.main import cli
from ipam import paths

CID = "3f2a9c01b2c4" + "0" * 52  # runtime-sized: 64 hex characters
POD = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0"


def _examples():
    """``(where, text)`` of every ipamctl command in the README and docs/*.md: inline code
    spans that are more than a command's name, and shell-block lines that start with
    ``ipamctl``."""
    found = []
    for page in PAGES:
        text = read(page)
        block = False
        for number, line in enumerate(text.splitlines(), 1):
            if line.startswith("```"):
                block = not block
                continue
            if block:
                if line.startswith("ipamctl "):
                    found.append(("%s:%d" % (page, number), line.split("  #")[0].strip()))
                continue
            for span in re.findall(r"`(ipamctl [^`]*)`", line):
                if not re.fullmatch(r"ipamctl( [a-z-]+)+", span):  # not just a command's name
                    found.append(("%s:%d" % (page, number), span))
    return sorted(set(found), key=lambda f: f[1])


def _argv(example, tmp, data):
    """The example as an argument vector for this pool: placeholders and host paths
    replaced, optional parts given."""
    example = re.sub(r"\$\([^)]*\)", "today", example)  # a shell expansion in a file name
    words = shlex.split(re.sub(r"\[([^\]]*)\](\.\.\.)?", r"\1", example))[1:]
    # DIR: a CNI bin directory, except for import, which reads a host-local dataDir
    directory = os.path.join(tmp, "host-local" if "import" in words else "bin")
    values = {"N": "mynet", "ID": CID, "X": CID[:12], "IP": "10.22.0.17", "IF": "eth0",
              "NS/NAME": "default/web-0", "NAME": "web-0", "old-name": "old-node",
              "URL": os.path.join(data, paths.DB_NAME),
              "FILE": os.path.join(tmp, "backup.db"), "now.db": os.path.join(tmp, "backup.db"),
              "DIR": directory}
    if words[:1] in (["install-plugin"], ["check-install"]):
        # Inside a throwaway root, never this system's CNI directories (an example
        # without DIRECTORY picks one of them): its paths are looked up under it.
        return [{"DIR": "/opt/cni/bin"}.get(word, word) for word in words] + ["--root", tmp]
    out = []
    for word in words:
        if word in values:
            word = values[word]
        elif word.startswith("/var/backups/"):
            word = os.path.join(tmp, "backup.db")
        elif word.startswith("/") and word != "/dev/null":  # a CNI bin directory, a source
            word = os.path.join(tmp, "bin")
        out.append(word)
    return out


EXAMPLES = _examples()


def test_the_readme_shows_commands():
    """The extraction finds the commands (an empty list would prove nothing)."""
    assert len(EXAMPLES) >= 25, EXAMPLES


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """The pool, made once by the installed plugin; each test gets a copy (its dataDir is
    recorded in the database, so the copy sits at the same path)."""
    data = tmp_path_factory.mktemp("readme-pool") / "data"
    data.mkdir()
    conf = {"cniVersion": "1.0.0", "name": "mynet", "type": "bridge",
            "ipam": {"type": "host-local-sqlite", "dataDir": str(data),
                     "ranges": [[{"subnet": "10.22.0.0/24", "rangeStart": "10.22.0.17"}]]}}
    assert run_plugin("ADD", conf, container_id=CID, args=POD).status == 0
    assert run_plugin("ADD", conf, container_id="other").status == 0
    template = data.parent / "template"
    shutil.copytree(data, template, symlinks=True)
    return data, template


@pytest.mark.parametrize("where,example", EXAMPLES,
                         ids=["%s: %s" % (w.split(":")[0], e) for w, e in EXAMPLES])
def test_every_readme_command_runs(tmp_path, pool, where, example):
    with contextlib.ExitStack() as stack:
        _run_example(tmp_path, pool, where, example, stack)


def _run_example(tmp_path, pool, where, example, stack):
    data, template = pool
    shutil.rmtree(data)
    shutil.copytree(template, data, symlinks=True)
    (tmp_path / "bin").mkdir()
    for cni_bin in ("opt/cni/bin", "usr/lib/cni"):  # install-plugin's, under --root
        (tmp_path / cni_bin).mkdir(parents=True)
    (tmp_path / "host-local" / "mynet").mkdir(parents=True)  # Go's layout, nothing leased
    argv = _argv(example, str(tmp_path), str(data))
    runner = CliRunner()
    if argv[0] == "check-install":  # a runtime and the plugin it runs, under --root
        (tmp_path / "etc/containerd").mkdir(parents=True)
        (tmp_path / "etc/containerd/config.toml").write_text("version = 2\n")
        made = runner.invoke(cli, ["install-plugin", "--root", str(tmp_path)])
        assert made.exit_code == 0, made.output
    if "--cri" in argv:  # gRPC's server as the runtime, listing the pool's sandboxes
        at = argv.index("--cri") + 1
        endpoint = "unix://%s" % (tmp_path / "cri.sock")
        if at < len(argv) and argv[at].startswith("unix://"):
            argv[at] = endpoint
        else:
            argv.insert(at, endpoint)
        stack.enter_context(cri_runtime(endpoint, [CID, "other"], ["mynet"]))
    if argv[0] == "unreserve":  # an address is unreserved after it was reserved
        made = runner.invoke(cli, ["--data-dir", str(data), "reserve", *argv[1:]])
        assert made.exit_code == 0, made.output
    if argv[:2] == ["db", "restore"]:  # a restore needs a backup made first
        made = runner.invoke(cli, ["--data-dir", str(data), "db", "backup", argv[2]])
        assert made.exit_code == 0, made.output
    result = runner.invoke(cli, ["--data-dir", str(data), *argv], input="y\n")
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        where, argv, result.output)
    assert result.exit_code == 0, (where, argv, result.output)
