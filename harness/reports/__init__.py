"""Reports from run folders: every table computed once (report.py, tables_*.py), plots that only draw them,
the paper comparison (reproduce.py) and the diagnose report."""
