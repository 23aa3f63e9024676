"""Acting on a plan: journal, render, submit, adopt, cancel, move replaced output aside."""
