"""Built-in backends, registered through the same hook as third-party ones."""
from ..contract import hookimpl
from .cpu import CpuBackend
from .cuda import CudaBackend
from .outlier import outlier_backend


@hookimpl
def fairgptq_backends():
    return {"cpu": CpuBackend, "cuda": CudaBackend, "outlier": outlier_backend}
