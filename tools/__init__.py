"""Developer tools, run from a source checkout (``python -m tools.<name>``): they regenerate files
that the package or its docs carry, and are not part of the installed package."""
