"""The pipeline: a library of shared modules (core/) and the stages that use it (data/, model/, deploy/, report, predict)."""
