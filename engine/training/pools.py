"""Which images of a folder data set may form a pretraining pool (masks never used, the test split never)."""

POOLS = ("unlabeled", "unlabeled+train", "train")
