"""The standard library: compound networks written in the spec language (`include "std/..."`)."""
