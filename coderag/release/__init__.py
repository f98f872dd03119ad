"""Releasing a candidate: the quality gate, publishing a passing release, and GitOps promotion."""
