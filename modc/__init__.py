"""modc: compile a network spec into a model, a certified optimizer and a training script."""

from modc.compiler import Build, build, compile_spec, load
from modc.errors import ModcError
from modc.optim import atoms, dualized

__all__ = ["Build", "ModcError", "atoms", "build", "compile_spec", "dualized", "load"]
__version__ = "0.1.0"
