"""Stage 3a, execution in NumPy: the unsharded reference, emulated chips, and the oracle that compares them."""
