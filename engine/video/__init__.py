"""Surgery videos: decoding/encoding (PyAV), whole-clip segmentation, per-frame tables, synthetic clips."""
