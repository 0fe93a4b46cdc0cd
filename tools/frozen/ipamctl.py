"""The frozen build's ``ipamctl`` executable: the console script's entry, and the child
that gc's network namespace check starts as ``sys.executable -I -m ipam.admin.netns``
(:func:`ipam.admin.netns.holders`): in a build, sys.executable is this executable, which has
no interpreter options, so it runs that module itself when asked so."""
import sys

if sys.argv[1:] == ["-I", "-m", "ipam.admin.netns"]:
    import runpy

    runpy.run_module("ipam.admin.netns", run_name="__main__", alter_sys=True)
else:
    from host_local_sqlite_cli.main import run

    run()
