"""Report output: JSON/CSV tables and plots."""

from specbound.report.io import bounds_table, report_json, write_report

__all__ = ["bounds_table", "report_json", "write_report"]
