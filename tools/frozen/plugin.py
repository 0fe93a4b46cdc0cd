"""The frozen build's plugin executable (``host-local-sqlite``): the console script's
entry, :func:`ipam.client.run`. No byte-code bundle: the freezer already keeps the
hot path's byte-code in plain files beside the executable.

Started by the name ``client.in-process`` (ipam.paths.IN_PROCESS_SUFFIX: the link beside
the build's native thin client, which execs it with that name when no node daemon took
the call), it runs the call in process only: the client has offered it to the daemon,
and said why that did not take it."""
import sys

from ipam.client import run
from ipam.paths import IN_PROCESS_SUFFIX  # loaded by ipam.client already

run(forwarding=not sys.argv[0].endswith(IN_PROCESS_SUFFIX))
