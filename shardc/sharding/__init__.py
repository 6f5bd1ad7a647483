"""Stage 2, sharding: per-op layout rules, resharding, the paper's presets, and the pass itself.

``shard.shard_program`` turns an IR graph into a sharded one (every value has a layout, every collective
is an op); ``sharded.verify_sharded`` checks a sharded graph and ``sharded.collectives_of`` derives
its collective records from it; ``stats`` defines the statistics all-reduce inside a norm or softmax
over a split dim; ``counts`` says what each op of it costs a chip, for the emulator and the cost model
alike.
"""
