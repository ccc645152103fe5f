"""The custom operator's contract (spec), executable reference, and library loading."""
