"""Built-in objectives, registered through the same hook as third-party ones."""
from ..contract import hookimpl
from .fair_pairs import FairPairObjective, MatrixObjective
from .likelihood_pairs import LikelihoodPairObjective


@hookimpl
def fairgptq_objectives():
    return {"fair_pairs": FairPairObjective, "hbias_matrix": MatrixObjective,
            "likelihood_pairs": LikelihoodPairObjective}
