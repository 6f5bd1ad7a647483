"""Exporters: a sharded program as a program for another system (JAX: :func:`export_jax`)."""
from shardc.export.to_jax import JAX_OPS, export_jax

__all__ = ["JAX_OPS", "export_jax"]
