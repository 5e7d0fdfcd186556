"""Built-in objectives, registered through the same hook as third-party ones."""
from ..hookspecs import hookimpl
from .fair_pairs import FairPairObjective, MatrixObjective


@hookimpl
def fairgptq_objectives():
    return {"fair_pairs": FairPairObjective, "hbias_matrix": MatrixObjective}
