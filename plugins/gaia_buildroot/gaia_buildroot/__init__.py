"""gaia-buildroot: the Buildroot base-OS pipeline for gaia.

Tables ``[buildroot]``, ``[buildroot.rpi]``, ``[stage]`` and ``[program.<name>]``; the
``buildroot.build`` checkpoint anchor; fingerprint sources that hash defconfigs, external
trees, board files and package override trees by content. See README.md for the config
reference.
"""

__version__ = "0.1.0"
