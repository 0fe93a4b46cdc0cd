"""``make demo`` leaves something to explore: it ends with ipamctl's list, history and
stats of the data it made, keeps that data, and every command line it prints can be
pasted into a shell as it is, from anywhere, with no venv active."""
import os
import re
import shlex
import subprocess
import sys

from helpers import REPO

from ipam import paths

BIN = os.path.dirname(sys.executable)


def paste(line, cwd):
    """A printed command line, pasted into bash in another directory, with no venv on PATH."""
    env = {k: v for k, v in os.environ.items()
           if k != "VIRTUAL_ENV" and not k.startswith(("CNI_", "IPAM_"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep)
                                  if os.path.realpath(p) != os.path.realpath(BIN))
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def commands(output):
    """``(line, what it printed after it, up to a blank line)`` of every ``$ `` line."""
    found = []
    for block in re.split(r"^(?=\$ )", output, flags=re.M)[1:]:
        line, _, rest = block.partition("\n")
        found.append((line[2:], rest.split("\n\n")[0]))
    return found


def test_the_demo_ends_with_ipamctl_on_data_it_keeps_and_its_lines_paste(tmp_path):
    top = tmp_path / "a demo's dir"  # a blank and a quote: the lines must quote them
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run(["make", "--no-print-directory", "-o", "install", "-o", "compile",
                           "demo", "PY=" + sys.executable, "DEMO_ARGS=" + shlex.quote(str(top))],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    data_dir = str(top / "networks")
    assert os.path.isfile(os.path.join(data_dir, paths.DB_NAME))  # kept
    assert "The data stays in %s" % top in out

    lines = commands(out)
    ctl = [(line, printed) for line, printed in lines if "ipamctl" in line]
    plugin = [line for line, _ in lines if "CNI_COMMAND=" in line]
    assert len(plugin) == 8
    # It ends by showing list, history and stats, each with the one --data-dir to use.
    shown = [shlex.split(line)[3] for line, _ in ctl[:3]]
    assert shown == ["list", "history", "stats"]
    assert {shlex.split(line)[shlex.split(line).index("--data-dir") + 1]
            for line, _ in ctl if "--data-dir" in line} == {data_dir}

    # Pasted, each shows what the demo printed (the data has not changed since).
    for line, printed in ctl[:3]:
        pasted = paste(line, elsewhere)
        assert pasted.returncode == 0, (line, pasted.stderr)
        assert pasted.stdout.strip() == printed.strip(), line
    assert "pod-b" in ctl[0][1] and "203.0.113.11" in ctl[0][1]
    assert "release" in ctl[1][1] and "demo-v6" in ctl[2][1]

    # The closing suggestions: as they are, and the two lines of the PATH way in one shell.
    rest = [line for line, _ in lines[lines.index(ctl[2]) + 1:]]
    activate = [n for n, line in enumerate(rest) if line.startswith(". ")]
    assert activate == [len(rest) - 2], rest
    for line in rest[:-2]:
        pasted = paste(line, elsewhere)
        assert pasted.returncode == 0, (line, pasted.stderr)
    pasted = paste("\n".join(rest[-2:]), elsewhere)
    assert pasted.returncode == 0 and "pod-b" in pasted.stdout, pasted

    # The plugin's calls, pasted, are the same calls (ADD, CHECK, DEL succeed again).
    for line in plugin:
        pasted = paste(line, elsewhere)
        assert pasted.returncode == 0, (line, pasted.stdout, pasted.stderr)
        assert "Traceback" not in pasted.stderr


def test_the_demo_starts_afresh_but_never_empties_a_directory_of_something_else(tmp_path):
    demo = [sys.executable, os.path.join(REPO, "tools", "demo.py")]
    for _ in range(2):
        proc = subprocess.run(demo + [str(tmp_path / "d")], capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    history = subprocess.run([os.path.join(BIN, "ipamctl"), "--data-dir",
                              str(tmp_path / "d" / "networks"), "history"],
                             capture_output=True, text=True, check=True).stdout
    assert history.count("allocate") == 4  # the first run's events are gone

    other = tmp_path / "other"
    other.mkdir()
    (other / "precious").write_text("keep")
    proc = subprocess.run(demo + [str(other)], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "not touching it" in proc.stderr
    assert os.listdir(other) == ["precious"]
