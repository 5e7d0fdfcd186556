"""Built-in evaluation tasks, registered through the same hook as third-party ones."""
from ..contract.hooks import hookimpl
from . import crows_decomposition, crows_pairs, pair_tasks, perplexity, stereoset, zeroshot


@hookimpl
def fairgptq_evaluation_tasks():
    tasks = (perplexity.TASK, crows_pairs.TASK, stereoset.TASK, crows_decomposition.TASK, *zeroshot.TASKS,
             *pair_tasks.TASKS)
    return {t.name: t for t in tasks}
