"""Built-in backends, registered through the same hook as third-party ones."""
from ..hookspecs import hookimpl
from .base import Backend


@hookimpl
def fairgptq_backends():
    return {"cpu": Backend}
