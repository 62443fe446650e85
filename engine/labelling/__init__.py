"""The labelling loop: which frames to label next, annotation store, refit after new labels."""
