"""Inner training: one task trained by one optimizer (the unroll), and its curves.

The layer between the optimizers and their users: meta-training, evaluation, the held-out
check, the opt_list tuning runs and the lopt-as-task family all train inner tasks through
:func:`lopt_cli.inner.unroll.unroll`.
"""
