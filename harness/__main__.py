import sys

try:
    from harness.cli import main
except ValueError as exc:  # a malformed NNBENCH_PLUGINS, read when the registry is imported
    if "NNBENCH_PLUGINS" not in str(exc):
        raise
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)

sys.exit(main())
