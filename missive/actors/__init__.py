"""Contract actors: one trio task per loaded contract, one message at a time.

``handler.handle`` is the step (run the VM for one message, build the outcome);
``runtime.Runtime`` schedules rounds of steps and commits them in groups.
"""
