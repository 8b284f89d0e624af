"""Experiments E1–E3 of shared/spec/experiments.md, one module (plus a CLI module) each."""
