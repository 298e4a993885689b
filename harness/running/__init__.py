"""Running a grid: the settings validated into a plan (plan.py), the one cell driver (driver.py), the measures
(runner.py for run/sweep, diagnose.py for diagnose), timers, the run-folder store, and data-parallel ranks."""
