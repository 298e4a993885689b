"""Run lm-eval tasks on an already loaded (and attention-method-switched) model.

The model and tokenizer are wrapped in lm-eval's HFLM, so every lm-eval task runs through the same forward pass
the harness measures. lm-eval is an optional dependency, imported only here and only when called.
Offline, only tasks whose data is local work (lm-eval's own generated tasks, or YAML tasks under include_path
that read local files).
"""
from tasks.base import TaskError


def _lm_eval():
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise TaskError("the lm-eval bridge needs lm-eval; run `pip install lm-eval`") from None
    return lm_eval, HFLM, TaskManager


def wrap(model, tokenizer, batch_size: int = 1, max_length: int | None = None, device: str | None = None):
    """lm-eval's HFLM around a model instance (HFLM keeps it as is: no reload, no device move)."""
    _, HFLM, _ = _lm_eval()
    device = device or str(next(model.parameters()).device)
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length, device=device)


def run_lm_eval(model, tokenizer, tasks: str | list[str], *, limit: int | float | None = None,
                num_fewshot: int | None = None, batch_size: int = 1, max_length: int | None = None,
                include_path: str | None = None, apply_chat_template: bool = False, **kwargs) -> dict:
    """lm-eval's results dict for `tasks` ('a+b' or a list); extra kwargs go to lm_eval.simple_evaluate."""
    lm_eval, _, TaskManager = _lm_eval()
    names = tasks.split("+") if isinstance(tasks, str) else list(tasks)
    # Index only the user's folder when given: scanning all built-in task YAML costs many seconds.
    manager = TaskManager(include_path=include_path, include_defaults=not include_path) if include_path else None
    try:
        results = lm_eval.simple_evaluate(model=wrap(model, tokenizer, batch_size, max_length), tasks=names,
                                          limit=limit, num_fewshot=num_fewshot, task_manager=manager,
                                          apply_chat_template=apply_chat_template, **kwargs)
    except KeyError as err:  # lm-eval names an unknown task with a KeyError
        raise TaskError(f"lm-eval: {err.args[0] if err.args else err}; check the task name, or pass "
                        "include_path=DIR") from None
    return dict(results or {})
