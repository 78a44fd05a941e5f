"""`python -m jarvis_core` and the `jarvis` command: Ctrl-C while Jarvis is still starting (importing, loading
plugins) is one line and exit code 130, like anywhere else."""

import sys


def main() -> None:
    try:
        from .cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
