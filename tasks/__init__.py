"""Long-context tasks: samples of a requested token length in, scores out; knows nothing of attention."""
from tasks.base import Sample, Task, TaskError, available_tasks, build_task

__all__ = ["Sample", "Task", "TaskError", "available_tasks", "build_task"]
