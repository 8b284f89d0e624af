"""Report output: JSON/CSV tables, plots and the self-contained HTML page."""

from specbound.report.io import bounds_table, report_json, stale_plots, write_report

__all__ = ["bounds_table", "report_json", "stale_plots", "write_report"]
