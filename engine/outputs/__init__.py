"""Segment a frame to files (masks, overlays, uncertainty), rendering, publication figures, the HTML report."""
