"""Purification (method.md sections 1 to 6): masks, fusions, the recipe, the pipeline.

``purify_pair(u, n, recipe, simulate=..., weak_denoise=...)`` in :mod:`.pipeline` is the
one entry point; :mod:`.masks` makes ``L`` and the background, :mod:`.fusion` the IPv1/IPv2
blends, :mod:`.modules` names the paper's three modules.
"""
