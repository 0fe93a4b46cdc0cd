"""The frozen build's plugin executable (``host-local-sqlite``): the console script's
entry, :func:`ipam.client.run`. No byte-code bundle: the freezer already keeps the
hot path's byte-code in plain files beside the executable."""
from ipam.client import run

run()
