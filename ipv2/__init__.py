"""IPv2: image purification and frequency-domain flow matching for ultra-low-dose lung CT.

The engine never imports Slicer or Qt (except :mod:`ipv2.slicer`), so the same code runs
headless on GPU servers, in the test suite and behind the Slicer panels.
"""

__version__ = "0.1.0"
