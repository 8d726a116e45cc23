"""The errors the engine raises on purpose. Each message says what is wrong and how to fix it; the
command line prints it as one line (exit status 2) and the widgets as a notification."""


class InputError(ValueError):
    """Bad user input (an array, a setting, a file); the message says what is wrong and how to fix it."""


class ModelFileError(InputError):
    """A model file that cannot be used; the message names the file and the problem."""


class Cancelled(Exception):
    """Prediction was stopped by the user before it finished."""
