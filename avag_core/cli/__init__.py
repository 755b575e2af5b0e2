"""The command lines behind `python -m avag_core.export`, `.predict` and `.convert_released`: argument parsing,
messages and exit codes, over the library in avag_core.inference and avag_core.checkpoints."""
