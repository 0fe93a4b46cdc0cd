"""Reproducible installs: setup.cfg caps every requirement below its next major version,
constraints.txt pins the exact version of every distribution that make install, dist,
bench and wheel install, and this venv (made by make install, as CI's are) holds
exactly those versions."""
import configparser
import os
import re
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def requirements():
    """``(where, Requirement)`` of install_requires and every extra in setup.cfg."""
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    found = [("install_requires", line) for line in
             cfg["options"]["install_requires"].splitlines()]
    for extra, lines in cfg["options.extras_require"].items():
        found += [(extra, line) for line in lines.splitlines()]
    return [(where, Requirement(line)) for where, line in found
            if line.strip() and not line.strip().startswith("#")]


def pins():
    pinned = {}
    with open(os.path.join(ROOT, "constraints.txt")) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line:
                name, _, version = line.partition("==")
                assert version, "not a pin (name==version): %r" % line
                pinned[canonicalize_name(name)] = Version(version)
    return pinned


def test_every_requirement_is_capped_below_its_next_major_version():
    for where, req in requirements():
        caps = [s for s in req.specifier if s.operator == "<"]
        assert caps, "%s: %s has no upper bound" % (where, req)


def test_every_requirement_is_pinned_within_what_setup_cfg_allows():
    pinned = pins()
    for where, req in requirements():
        name = canonicalize_name(req.name)
        assert name in pinned, "%s: %s is not in constraints.txt" % (where, req)
        assert req.specifier.contains(pinned[name], prereleases=True), (
            "%s: the pin %s==%s is outside %s" % (where, name, pinned[name], req))


def test_this_venv_holds_the_pinned_versions():
    """make install installed with the pins: every pinned distribution installed here
    has its pinned version, and the test dependencies are all installed."""
    pinned = pins()
    installed = {canonicalize_name(d.metadata["Name"]): Version(d.version)
                 for d in metadata.distributions()}
    wrong = {name: (str(installed[name]), str(version)) for name, version in pinned.items()
             if name in installed and installed[name] != version}
    assert not wrong, "installed, pinned: %s (run make install)" % wrong
    needed = {canonicalize_name(req.name) for where, req in requirements()
              if where in ("install_requires", "test")}
    assert needed <= set(installed), needed - set(installed)


def test_every_pip_install_of_the_makefile_uses_the_pins():
    """But the one of `make constraints`, which finds the newest versions to pin."""
    with open(os.path.join(ROOT, "Makefile")) as f:
        makefile = f.read()
    target = re.search(r"^constraints:\n((?:\t.*\n)+)", makefile, re.M)
    assert target, "no constraints target"
    recipes = makefile.replace(target.group(1), "")
    assert re.search(r"^CONSTRAINTS := constraints.txt$", makefile, re.M)
    assert re.search(r"^PIP_C +=.* -c \$\(CONSTRAINTS\)$", makefile, re.M)
    unpinned = [line.strip() for line in recipes.splitlines()
                if "pip install" in line and not line.startswith(("PIP_C", "#"))]
    assert not unpinned, unpinned
    assert recipes.count("$(PIP_C)") >= 5
