"""``python -m ipam`` and the ``host-local-sqlite`` console script: the plugin's entry,
:func:`ipam.client.run` (the launcher's too), which runs the call on the node daemon if
it takes it, else in this process (:func:`ipam.cni.in_process`)."""
from ipam.client import run

__all__ = ["run"]

if __name__ == "__main__":
    run()
