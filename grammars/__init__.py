"""The grammar of the ``.model`` language, installed with shardc as the package data ``shardc.grammars``.

This folder holds data, not code: ``model.lark`` is read by :mod:`shardc.language.parser`.
"""
