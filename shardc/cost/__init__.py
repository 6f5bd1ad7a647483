"""Stage 3b, the analytical cost model: latency, memory and MFU of a sharded program on a chip profile."""
