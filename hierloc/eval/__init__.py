"""Evaluation: the OSV-5M benchmark's metrics."""
