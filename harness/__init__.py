"""Models, runner, timing, sweeps, results store, reports and the CLI."""
