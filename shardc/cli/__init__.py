"""The ``shardc`` command line: one module per subcommand group, ``main`` dispatches."""
