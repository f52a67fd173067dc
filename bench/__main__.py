import sys

if sys.argv[1:2] == ["chaos"]:
    from bench.chaos import main as chaos

    sys.exit(chaos(sys.argv[2:]))

if sys.argv[1:2] == ["visibility"]:
    from bench.visibility import main as visibility

    sys.exit(visibility(sys.argv[2:]))

from bench.cli import main

sys.exit(main())
