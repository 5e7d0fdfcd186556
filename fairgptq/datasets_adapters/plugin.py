"""Built-in pair sources, registered through the same hook as third-party ones."""
from ..contract import hookimpl
from .chbias import load_chbias
from .crows_pairs import load_crows_pairs
from .holistic_bias import load_holistic_bias
from .pair_files import load_pair_file
from .redditbias import load_redditbias
from .stereoset import load_stereoset
from .templates import generate_template_pairs


@hookimpl
def fairgptq_pair_sources():
    return {"stereoset": load_stereoset, "crows_pairs": load_crows_pairs,
            "pair_file": load_pair_file, "templates": generate_template_pairs, "chbias": load_chbias,
            "redditbias": load_redditbias, "holistic_bias": load_holistic_bias}
