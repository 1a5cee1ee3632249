"""A ground-truth chest phantom: paired NDCT/uLDCT with the truth behind both.

Real paired data cannot say how much noise a method removed, because the two scans are
misaligned and neither is noise-free. The phantom can: it renders one randomised chest at
two breathing phases (``clean_ref`` for the normal-dose moment, ``clean_ld`` for the
low-dose moment), adds dose-dependent noise to each, and returns the true masks and the
deformation between the phases. It is the embedded data of the demo, the tests and the
quality benchmark, deterministic from its seed.
"""

from ipv2.phantom.generate import PhantomCase, PhantomMasks, make_phantom

__all__ = ["PhantomCase", "PhantomMasks", "make_phantom"]
