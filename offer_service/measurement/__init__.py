"""Measurement: the merchant's report, its statistics, its CSV and the dashboard."""
