"""The harness around attention/ and tasks/: cli/ (the command line), running/ (settings, plan, cell driver,
store), models/ (loading, random weights, device maps, long prefill), reports/ (tables, plots, paper comparison);
options.py and registry.py are stdlib-only leaves that attention/ and tasks/ import."""
