"""Exceptions that end a frame.  They never leave the VM: ``execute`` turns them into a result."""

from __future__ import annotations

from missive.vm.types import Status


class Halt(Exception):
    """An exceptional halt: all of the frame's gas is gone and its effects are undone."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
