"""What glcleanup decides: each command as plain functions that return reports and never print."""
