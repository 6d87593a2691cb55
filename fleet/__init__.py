"""Fleet: background jobs on Dramatiq you can trust with production."""

__version__ = "0.1.0"


class FleetError(Exception):
    """An error the CLI prints as one line (`fleet: …`) before exiting with `exit_code`."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
