"""Runners: the engine that executes cases on backends, the backends, the report writers, the
benchmarks and the command line (`bnconform`)."""
