"""Widgets of the IPv2Denoise panel that would crowd the module file (Qt side only)."""
