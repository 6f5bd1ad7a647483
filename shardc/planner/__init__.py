"""The planner: which partitioning suits the application (``shardc.plan``, ``shardc plan``)."""
