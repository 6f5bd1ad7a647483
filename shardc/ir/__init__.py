"""Stage 0, the core: the device mesh, layouts, the typed IR, the op table, the IR verifier and transforms.

Everything else builds on these modules; they import nothing of shardc but :mod:`shardc.errors` and
:mod:`shardc.units`.  Import names from their modules (``shardc.ir.graph``, ``shardc.ir.layout``...).
"""
