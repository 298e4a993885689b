"""How long the cells still to run will take: the time per prompt token of the cells measured so far, times
the prompt tokens of the cells left (a cell's time grows about linearly with its length at the lengths a sweep
mixes; the mean time per cell would undercount the longer cells a grid runs last).

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
    def __init__(self, cells: int, tokens: int, ranks: int = 1):
        self.cells, self.tokens, self.ranks = cells, tokens, ranks  # the whole grid; its cells share out over ranks
        self.passed_cells = self.passed_tokens = 0                   # behind us: measured, done before, or elsewhere
        self.measured = self.measured_tokens = 0
        self.seconds = 0.0
        self.next_report = 1

    @staticmethod
    def start() -> float:
        return time.perf_counter()

    def cell_done(self, length: int, started: float | None) -> str | None:
        """Count one cell of the grid (`started`: when this process began measuring it, None when it ran nothing
        here); returns the estimate line when one is due."""
        self.passed_cells += 1
        self.passed_tokens += length
        if started is None:
            return None
        self.measured += 1
        self.measured_tokens += length
        self.seconds += time.perf_counter() - started
        if self.measured < self.next_report or self.passed_cells >= self.cells:
            return None
        self.next_report *= 2
        return self.text()

    def left(self) -> float:
        rate = self.seconds / max(self.measured_tokens, 1)
        return rate * max(self.tokens - self.passed_tokens, 0) / self.ranks

    def text(self) -> str:
        cells_left = -(-max(self.cells - self.passed_cells, 0) // self.ranks)
        return (f"estimate: about {duration(self.left())} left for about {cells_left} cell(s) "
                f"({duration(self.seconds / self.measured)} per cell so far, {self.measured} measured)")
