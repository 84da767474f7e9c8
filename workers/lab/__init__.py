"""The lab: real OpenZFS in QEMU virtual machines, for tests and for people.

``recipe`` finds (or builds) the cached VM image, ``qemu`` and ``ssh`` build command lines,
``vm`` runs one VM, ``lab`` brings up and tears down N of them and records them on disk so that
another process (``zfleet lab down``) can find them.
"""
