"""User-facing errors: the scripts print these as one line and exit non-zero, without a traceback."""


class UserError(Exception):
    """Something the user can fix (bad recipe, missing file, bad --set). Printed as one line."""

    exit_code = 2

