"""The spec's procedures: what a procedure is, its shared steps, one module per procedure."""
