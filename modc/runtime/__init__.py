"""Runtime torch code that the compiler copies verbatim into generated packages."""
