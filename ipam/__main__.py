"""``python -m ipam`` and the ``host-local-sqlite`` console script."""
import sys


def run():
    from ipam.cni import main

    sys.exit(main())


if __name__ == "__main__":
    run()
