"""The market's settings that the command line shows before anything heavy is imported (`missive
--help` loads no curve library; tests/test_cli_start.py)."""

#: the unbonding delay a cluster's registry is made with unless told otherwise (seconds)
DEFAULT_UNBOND_SECONDS = 600
