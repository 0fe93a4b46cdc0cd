"""``make image``: the installer image of deploy/kubernetes/ (its Containerfile), built
from the self-contained build of ``make dist`` without pulling anything.

The image is ``FROM scratch``: it holds glibc (the shared libraries of Debian's
``libc6`` package on this machine, which the build leaves to the node), the build at
``/opt/host-local-sqlite/``, ``/tmp`` and a two-line ``/etc/passwd`` and ``/etc/group``;
its entrypoint is the build's ``ipamctl``. No shell, no Python interpreter, no package
manager. glibc's gconv modules are left out: they serve ``iconv`` only, which Python
does not call (8 MB).

This script prepares the build context, a directory (default ``build/image/``)::

    Containerfile           a copy of deploy/kubernetes/Containerfile
    base/                   glibc, /etc/passwd, /etc/group, /tmp: the first layer
    host-local-sqlite.d/    the build (hard links to make dist's files): the second

then runs ``podman build --pull=never``, tagging
``localhost/host-local-sqlite:<version>`` and passing the labels' values (version,
git revision, glibc needed); ``--save`` writes the image as an OCI archive into dist/,
which a node imports (``ctr -n k8s.io images import``). ``--no-build`` stops after the
context and prints the arguments of ``podman`` that would build it (the tests build
with a podman of their own). Prints a JSON report.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CONTAINERFILE = os.path.join(ROOT, "deploy", "kubernetes", "Containerfile")
# make dist's build: the copy that its unpacked tarball's ipamctl links to.
FROZEN = os.path.dirname(os.path.realpath(os.path.join(ROOT, "build", "frozen", "ipamctl")))
NAME = "localhost/host-local-sqlite"  # podman's name for a local image "host-local-sqlite"
GLIBC_PACKAGE = "libc6"  # of dpkg's architecture: a multiarch system may have others
_SHARED_LIBRARY = re.compile(r"\.so(\.\d+)*$")
PASSWD = "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:" \
         "/sbin/nologin\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


def _native(package: str) -> str:
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()
    return "%s:%s" % (package, arch)


def glibc_files(package: str = GLIBC_PACKAGE) -> list[str]:
    """The shared libraries of Debian's glibc package, as dpkg lists them (the image's
    paths), but its gconv modules."""
    listed = subprocess.run(["dpkg", "-L", _native(package)], capture_output=True, text=True,
                            check=True).stdout.split()
    return sorted(p for p in listed if _SHARED_LIBRARY.search(p) and "/gconv/" not in p
                  and os.path.isfile(p))


def glibc_version(package: str = GLIBC_PACKAGE) -> str:
    """The package's upstream version, e.g. ``2.36`` for ``2.36-9+deb12u14``."""
    version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", _native(package)],
                             capture_output=True, text=True, check=True).stdout
    return re.sub(r"^\d+:", "", version).split("-")[0]


def _as_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version))


def base_layer(base: str) -> list[str]:
    """Write glibc, /etc/passwd, /etc/group and /tmp under ``base``; returns the
    libraries' paths. A library that is a symbolic link to another listed one (the
    loader's ``/lib64/ld-linux-x86-64.so.2``, versioned names of older releases)
    stays a link; any other is copied from where it really is."""
    files = glibc_files()
    listed = set(files)
    for path in files:
        dest = os.path.join(base, path.lstrip("/"))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if os.path.islink(path):
            target = os.readlink(path)
            if os.path.normpath(os.path.join(os.path.dirname(path), target)) in listed:
                os.symlink(target, dest)
                continue
        shutil.copy2(os.path.realpath(path), dest)
    os.makedirs(os.path.join(base, "etc"), exist_ok=True)
    for name, text in (("passwd", PASSWD), ("group", GROUP)):
        with open(os.path.join(base, "etc", name), "w") as f:
            f.write(text)
        os.chmod(os.path.join(base, "etc", name), 0o644)
    os.makedirs(os.path.join(base, "tmp"))
    os.chmod(os.path.join(base, "tmp"), 0o1777)
    return files


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copy2(src, dst)


def revision() -> str:
    """This tree's git commit (``-dirty`` with uncommitted changes), or "unknown"."""
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def prepare(frozen: str, context: str) -> dict:
    """Make the build context in ``context`` (replaced) from the build ``frozen``;
    returns its BUILD-INFO with the glibc the image holds."""
    with open(os.path.join(frozen, "BUILD-INFO")) as f:
        info = json.load(f)
    have = glibc_version()
    if _as_tuple(have) < _as_tuple(info["glibc"]):
        raise SystemExit("this machine's glibc (%s) is older than the build needs (%s)"
                         % (have, info["glibc"]))
    shutil.rmtree(context, ignore_errors=True)
    os.makedirs(context)
    shutil.copy(CONTAINERFILE, os.path.join(context, "Containerfile"))
    info["image_glibc"] = have
    info["image_libraries"] = base_layer(os.path.join(context, "base"))
    shutil.copytree(frozen, os.path.join(context, "host-local-sqlite.d"), symlinks=True,
                    copy_function=_link_or_copy)
    return info


def build_args(context: str, info: dict, tag: str) -> list[str]:
    """The arguments of ``podman`` that build the image from ``context``."""
    labels = {"VERSION": info["version"], "REVISION": revision(), "GLIBC": info["glibc"],
              "DIGEST": info["digest"]}
    return ["build", "--pull=never",
            "--file", os.path.join(context, "Containerfile"), "--tag", tag,
            *("--build-arg=%s=%s" % item for item in labels.items()), context]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frozen", default=FROZEN,
                        help="the build (default: make dist's, in build/frozen/)")
    parser.add_argument("--context", default=os.path.join(ROOT, "build", "image"),
                        help="the build context made here (default: build/image/)")
    parser.add_argument("--tag", help="the image's name (default: %s:<version>)" % NAME)
    parser.add_argument("--save", nargs="?", const="", metavar="PATH",
                        help="also write the image as an OCI archive (default: "
                             "dist/host-local-sqlite-<version>-image-<platform>.tar)")
    parser.add_argument("--no-build", action="store_true",
                        help="make the context only; print podman's arguments")
    args = parser.parse_args()
    context = os.path.abspath(args.context)
    info = prepare(os.path.abspath(args.frozen), context)
    tag = args.tag or "%s:%s" % (NAME, info["version"])
    argv = build_args(context, info, tag)
    report = {"tag": tag, "context": context, "version": info["version"],
              "glibc_needed": info["glibc"], "image_glibc": info["image_glibc"],
              "build_args": argv}
    if not args.no_build:
        subprocess.run(["podman", *argv], check=True, stdout=sys.stderr)
        inspect = subprocess.run(["podman", "image", "inspect", tag], capture_output=True,
                                 text=True, check=True).stdout
        report["image_bytes"] = json.loads(inspect)[0]["Size"]
        if args.save is not None:
            archive = args.save or os.path.join(ROOT, "dist", "host-local-sqlite-%s-image-%s.tar"
                                                % (info["version"], info["platform"]))
            os.makedirs(os.path.dirname(os.path.abspath(archive)), exist_ok=True)
            if os.path.exists(archive):
                os.unlink(archive)  # podman save refuses to overwrite
            subprocess.run(["podman", "save", "--format", "oci-archive", "--output", archive,
                            tag], check=True)
            report["archive"] = archive
            report["archive_bytes"] = os.path.getsize(archive)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
