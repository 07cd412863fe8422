"""modc: compile a network spec into a model, a certified optimizer and a training script."""

from modc.compiler import Build, build, compile_spec, load
from modc.errors import ModcError

__all__ = ["Build", "ModcError", "build", "compile_spec", "load"]
__version__ = "0.1.0"
