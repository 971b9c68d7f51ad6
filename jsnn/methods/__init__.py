"""Training methods built on the core: Dspike's finite-difference temperature search."""

from jsnn.methods import fdg

__all__ = ["fdg"]
