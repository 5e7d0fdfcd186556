"""Evaluation suite: WikiText-2 perplexity, CrowS-Pairs, StereoSet and zero-shot multiple choice.

Entry point: :func:`evaluate` (built-in task names in :data:`TASKS`; every task, a plugin's
too, is an :class:`EvaluationTask` in the plugin registry, see :mod:`.tasks`); results go to
JSON or a table with :mod:`.report`.  Every likelihood task runs on the one batched scorer in
:mod:`.scoring`, which tokenises as lm-evaluation-harness does.
"""
from .crows_pairs import evaluate_crows_pairs
from .perplexity import evaluate_wikitext2, perplexity_of_ids
from .report import print_table, results_table, save_json
from .scoring import ContinuationScore, Request, encode_request, score_requests, score_sentences
from .stereoset import evaluate_stereoset
from .suite import TASKS, evaluate
from ..contract.tasks import EvaluationTask, TaskContext, TaskOptions
from .task_registry import registered_tasks
from .zeroshot import evaluate_multiple_choice, evaluate_zeroshot
from .zeroshot_tasks import ZERO_SHOT_TASKS, MultipleChoiceItem, load_zeroshot

__all__ = ["TASKS", "ZERO_SHOT_TASKS", "ContinuationScore", "EvaluationTask", "MultipleChoiceItem", "Request",
           "TaskContext", "TaskOptions", "encode_request", "registered_tasks",
           "evaluate", "evaluate_crows_pairs", "evaluate_multiple_choice", "evaluate_stereoset", "evaluate_wikitext2",
           "evaluate_zeroshot", "load_zeroshot", "perplexity_of_ids", "print_table", "results_table", "save_json",
           "score_requests", "score_sentences"]
