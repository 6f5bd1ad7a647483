"""Stage 1, the language: ``.model`` text -> syntax tree -> IR, and IR -> text.

``parser`` reads the grammar (``grammars/model.lark``) and builds the syntax tree, ``lower`` turns it
into a verified :class:`~shardc.ir.graph.Graph`, and ``printer`` writes a graph back as text so that
``parse(format(g)) == g``.
"""
