"""User-facing errors: the scripts print these as one line and exit non-zero, without a traceback."""


class UserError(Exception):
    """Something the user can fix (bad recipe, missing file, bad --set). Printed as one line."""

    exit_code = 2


class Interrupted(UserError):
    """A run stopped by Ctrl-C (exit 130) or SIGTERM (143) after saving a checkpoint."""

    exit_code = 130



class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, timeout, docker stop, a cluster's pre-emption), raised where the process is, so it stops like
    Ctrl-C: temporary files and folders are removed on the way out (cli.run installs the handler)."""
