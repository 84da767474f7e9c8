"""The composition root: the `zfleet` CLI, the embedded demo and worker assembly.

The only package that imports both coordinator/ and workers/; everything else keeps to its side.
"""
