"""The shared keys read at the start of a run and written at its end, from the pytest
process or from the sync agent (a helper process for remote stores)."""
