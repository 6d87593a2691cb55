"""The `fleet` command with the test actors registered, so a real `fleet scheduler` can emit
test tasks: `python -m tests.fleet_with_test_tasks scheduler`."""
import tests.worker_actors  # noqa: F401  (registers the tests.* tasks)
from fleet.cli import main

if __name__ == "__main__":
    main()
