"""Pair sources for Fair-GPTQ calibration and bias evaluation, plus WikiText-2 text.

Every source returns :class:`LoadedPairs` (a ``list[Pair]`` whose ``bad_rows`` lists
the rows it skipped), so pipelines can report what was dropped and why.
"""
from .chbias import load_chbias
from .crows_pairs import load_crows_pairs
from .holistic_bias import load_holistic_bias
from .pair_files import load_pair_file
from ..contract import Pair, split_key
from .redditbias import load_redditbias
from .sampling import sample_pairs
from .stereoset import load_stereoset
from .templates import default_gender_template_pairs, generate_template_pairs
from .validation import BadRow, LoadedPairs

__all__ = ["BadRow", "LoadedPairs", "Pair", "default_gender_template_pairs", "generate_template_pairs",
           "load_chbias", "load_crows_pairs", "load_holistic_bias", "load_pair_file", "load_redditbias",
           "load_stereoset", "sample_pairs", "split_key"]
