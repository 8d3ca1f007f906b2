"""Plots (matplotlib, Agg) and Markdown tables built from run folders."""
