"""host-local's directory layout, kept as a two-way contract: the files we write
(:mod:`ipam.mirror.files`), what they say (:mod:`ipam.mirror.contents`), the reconcile
after someone else changed them (:mod:`ipam.mirror.reconcile`), and the reading of
host-local's files of every version (:mod:`ipam.mirror.importer`).

This file stays empty of imports: the plugin's hot path passes through it.
"""
