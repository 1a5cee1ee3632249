"""``ipv2 demo``: the whole method end to end on the built-in phantom, CPU-friendly.

It answers the paper's question with ground truth: trained with the same network and
budget, does a model purified with IPv2 clean the background and the lungs that an
IPv1-trained model leaves noisy? See :func:`ipv2.demo.pipeline.run_demo`.
"""

from ipv2.demo.pipeline import DemoConfig, run_demo

__all__ = ["DemoConfig", "run_demo"]
