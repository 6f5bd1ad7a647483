"""The machine: chip profiles (data files) and how long a collective takes on them.

It sits below the sharding pass because the pass prices the collectives it chooses between exactly as
the cost model does.
"""
