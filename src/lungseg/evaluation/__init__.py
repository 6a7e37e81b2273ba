"""Metrics, per-slice tables, galleries and the written analysis (``lungseg evaluate``)."""
