"""How long the cells still to run will take: the mean time of the cells measured so far times the cells left.

A first guess after one cell, refined as more finish (printed after cells 1, 2, 4, 8, ...). Model loading is not
counted, so a grid of several models takes a little longer than it says.
"""
import time


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Estimate:
    def __init__(self, to_run: int):
        self.to_run = to_run        # cells this process will go through (measured or recorded as too long)
        self.passed = 0             # of those, how many are behind us
        self.measured = 0
        self.seconds = 0.0          # spent measuring them
        self.next_report = 1

    def start(self) -> float:
        return time.perf_counter()

    def cell_done(self, started: float | None) -> str | None:
        """Count one cell (`started`: its start time, None when it ran nothing); the estimate line when due."""
        self.passed += 1
        if started is not None:
            self.measured += 1
            self.seconds += time.perf_counter() - started
        if not self.measured or self.measured < self.next_report or self.passed >= self.to_run:
            return None
        self.next_report *= 2
        return self.text()

    def left(self) -> float:
        return self.seconds / max(self.measured, 1) * max(self.to_run - self.passed, 0)

    def text(self) -> str:
        return (f"estimate: about {duration(self.left())} left for {self.to_run - self.passed} cell(s) "
                f"({duration(self.seconds / self.measured)} per cell over {self.measured} measured)")
