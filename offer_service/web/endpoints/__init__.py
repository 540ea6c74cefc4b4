"""Thin HTTP handlers, one module per resource."""
